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


# scripts/test.sh runs the suite on pytest-xdist workers with `--dist loadscope`: a test file per worker, but
# tests/test_e2e.py's slow tests go out as two halves of about equal length, each run in one worker in the
# order listed here (a project synced once per half). The order keeps the two projects' `uv run test-all`
# apart in time: one half starts with it while the other starts with a Pants pass. (Both at once, each on
# two workers of its own, ran 6 busy processes on 2 cores, and a 10 s kill test missed its 10 s.)
E2E_HALVES = {
    "classification": (
        "test_lint_and_test_pass_in_a_fresh_project",
        "test_smoke_training_through_uv",
        "test_uv_run_does_not_recompile_bytecode",
        "test_ctrl_c_through_uv_run_exits_130",
        "test_a_fresh_projects_first_smoke_run_serves_and_predicts_by_default",
        "test_pants_in_generated_project_is_cached_and_incremental",
        "test_pants_and_uv_use_the_same_tool_versions",
    ),
    "generation": (
        "test_pants_passes_in_a_generated_text_generation_project",
        "test_template_checkout_passes_pants",
        "test_generation_project_lints_tests_trains_serves_and_evaluates",
        "test_train_cloud_offline",
        "test_serve_cloud_offline",
    ),
}
E2E_HALF = {name: half for half, names in E2E_HALVES.items() for name in names}
E2E_ORDER = {name: position for names in E2E_HALVES.values() for position, name in enumerate(names)}


def function_of(test: str) -> str:
    """A test's function name, without its parameters (`test_x[gcp]` -> `test_x`)."""
    return test.split("[")[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """tests/test_e2e.py's tests in their halves' order (in their place among the other files' tests)."""
    places = [index for index, item in enumerate(items) if item.path.name == "test_e2e.py"]
    ordered = sorted((items[index] for index in places), key=lambda item: E2E_ORDER.get(function_of(item.name), 0))
    for index, item in zip(places, ordered, strict=True):
        items[index] = item


def work_unit(nodeid: str) -> str:
    """What one xdist worker runs together: an end-to-end half, or else the test's file."""
    path, _, test = nodeid.partition("::")
    half = E2E_HALF.get(function_of(test)) if path.endswith("test_e2e.py") else None
    return f"e2e-{half}" if half else path


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadscope` with work_unit() as the scope (xdist's own loadgroup cannot group under pytest 9)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]  # (no py.typed)

    class ByWorkUnit(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByWorkUnit(config, log)


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
