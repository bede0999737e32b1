"""Bake projects from the template and run commands inside them."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parent.parent
CLOUDS = ("gcp", "aws", "azure")
TASKS = ("text-classification", "text-generation")
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Template Tests",
    "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "Template Tests",
    "GIT_COMMITTER_EMAIL": "tests@example.invalid",
}


def pytest_configure() -> None:
    """Ctrl-C reaches the commands the tests start, as from a terminal, even when pytest itself was
    started in the background by a shell (which ignores SIGINT there; a handler resets on exec)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell would have: no inherited venv or settings overrides, nothing pytest or
    pytest-xdist set for this run (a project's own pytest would take itself for one of this run's workers)."""
    dropped = {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH", "SETTINGS_FILE", "LIT_SERVER_API_KEY"}
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in dropped and "__" not in key and not key.startswith(("PYTEST_XDIST_", "PYTEST_CURRENT_TEST"))
    }
    return {**env, **GIT_IDENTITY, **extra}


@dataclass
class Baked:
    path: Path

    def run(
        self, *command: str, timeout: float = 900, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(command), cwd=self.path, env=clean_env(**(env or {})),
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def files(self) -> list[Path]:
        return [path for path in self.path.rglob("*") if path.is_file() and ".git" not in path.parts]


def bake(output_dir: Path, lock: bool = False, **answers: Any) -> Baked:
    """Generate a project through cookiecutter's API; `lock` runs the post-gen `uv lock`."""
    env = {"MLCC_SKIP_UV_LOCK": "" if lock else "1", **GIT_IDENTITY}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        path = cookiecutter(str(TEMPLATE), no_input=True, extra_context=answers, output_dir=str(output_dir))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Baked(Path(path))


@pytest.fixture
def baker(tmp_path: Path) -> Callable[..., Baked]:
    return lambda **answers: bake(tmp_path / "out", **answers)
