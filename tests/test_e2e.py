"""Slow end to end: generate, `uv sync`, then the project's own commands, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLOUDS, Baked, bake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Baked]:
    """One locked and synced project per cloud (cloud group included), made on first use."""
    return {}


def project_for(cloud: str, synced: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory) -> Baked:
    if cloud not in synced:
        project = bake(tmp_path_factory.mktemp(cloud), lock=True, default_cloud=cloud, project_name=f"E2E {cloud}")
        assert (project.path / "uv.lock").is_file(), "the post-gen hook locks the dependencies"
        result = project.run("uv", "sync", "--locked", "--all-groups")
        assert result.returncode == 0, result.stderr[-3000:]
        synced[cloud] = project
    return synced[cloud]


def test_lint_and_test_pass_in_a_fresh_project(
    synced: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory
) -> None:
    project = project_for("gcp", synced, tmp_path_factory)
    lint = project.run("uv", "run", "lint")
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-3000:]
    assert "All checks passed!" in lint.stdout
    assert "Success: no issues found" in lint.stdout
    via_task = project.run("uv", "run", "task", "lint")
    assert via_task.returncode == 0
    assert via_task.stdout == lint.stdout, "`uv run lint` is `uv run task lint`"

    test = project.run("uv", "run", "test", "-q", "-p", "no:cacheprovider")
    assert test.returncode == 0, test.stdout[-5000:]
    assert " passed" in test.stdout
    assert "skipped" not in test.stdout, "with --all-groups nothing is skipped"


def test_smoke_training_through_uv(synced: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory) -> None:
    project = project_for("gcp", synced, tmp_path_factory)
    result = project.run("uv", "run", "train-local", "--smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = project.path / "models" / "smoke"
    files = {path.name for path in run_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "metrics.json"} <= files
    assert 0.0 <= json.loads((run_dir / "metrics.json").read_text())["accuracy"] <= 1.0
    assert (project.path / "models" / "latest").resolve() == run_dir.resolve()
    status = project.run("git", "status", "--porcelain")
    assert status.stdout == "", "training outputs are git-ignored"


def no_credentials_env(home: Path) -> dict[str, str]:
    uv_cache = subprocess.run(["uv", "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
    return {
        "HOME": str(home),
        "UV_CACHE_DIR": uv_cache,
        "PYENV_ROOT": os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv")),
        "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1",
        "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
        "SKYPILOT_API_SERVER_LOCAL_PORT": "46582",
        # Credential lookups must not probe cloud metadata servers from a test machine.
        "NO_GCE_CHECK": "True",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def sky_servers() -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "sky.server.server" in cmdline:
            found.append(cmdline)
    return found


@pytest.mark.parametrize("cloud", CLOUDS)
def test_train_cloud_offline(
    cloud: str, synced: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    project = project_for(cloud, synced, tmp_path_factory)
    env = no_credentials_env(tmp_path)

    dry = project.run("uv", "run", "train-cloud", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert dry.stdout.startswith("sky launch ")
    assert f"--infra {cloud}" in dry.stdout

    schema = project.run("uv", "run", "python", "-c", "import sky; sky.Task.from_yaml('sky_task.yaml')", env=env)
    assert schema.returncode == 0, schema.stderr[-3000:]

    launch = project.run("uv", "run", "train-cloud", timeout=120, env=env)  # timeout: a hang guard
    assert launch.returncode != 0
    assert f"{cloud} has no usable credentials" in launch.stderr
    assert "Traceback" not in launch.stderr
    assert not sky_servers(), "no SkyPilot API server left running"
