"""train-cloud, offline: SkyPilot's own schema check, the built commands, the preflight.

SkyPilot is imported in a subprocess with its API server disabled and a private port,
so nothing is left running; each test that touches sky asserts that.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from src.config import load_settings
from tests.helpers.processes import only_error_line, run_module, sky_api_servers
from tests.helpers.sky import needs_sky, sky_env


@needs_sky
def test_task_file_passes_skypilot_schema(tmp_path: Path) -> None:
    code = "import sys, sky; task = sky.Task.from_yaml(sys.argv[1]); print(task.name)"
    task_file = str(load_settings(environ={}).cloud.task_file)
    result = subprocess.run(
        [sys.executable, "-c", code, task_file], env=sky_env(tmp_path),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert not sky_api_servers()


@needs_sky
def test_misspelled_key_gets_did_you_mean(tmp_path: Path) -> None:
    task_file = load_settings(environ={}).cloud.task_file
    broken = tmp_path / "sky_task.yaml"
    broken.write_text(task_file.read_text().replace("workdir:", "workdri:"), encoding="utf-8")
    result = run_module("src", "train-cloud", "--dry-run", env=sky_env(tmp_path, CLOUD__TASK_FILE=str(broken)))
    assert result.returncode == 2
    assert "workdri" in result.stderr
    assert "did you mean" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert not sky_api_servers()


@needs_sky
def test_dry_run_prints_command_and_contacts_nothing(tmp_path: Path) -> None:
    result = run_module("src", "train-cloud", "--dry-run", env=sky_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    infra = load_settings(environ={}).cloud.infra
    assert result.stdout.startswith("sky launch ")
    assert f"--infra {infra}" in result.stdout
    assert not sky_api_servers()


@needs_sky
def test_dry_run_carries_overrides_and_node_count(tmp_path: Path) -> None:
    env = sky_env(tmp_path, TRAINING__MAX_STEPS="10")
    result = run_module("src", "train-cloud", "--dry-run", "--num-nodes", "2", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--env TRAINING__MAX_STEPS=10" in result.stdout
    assert "--num-nodes 2" in result.stdout


@needs_sky
@pytest.mark.parametrize("argv", [["--infra", "oracle"], ["--gpus", "L4:abc"], ["--cluster", "Bad Name!"]])
def test_bad_flags_exit_2_before_anything_runs(tmp_path: Path, argv: list[str]) -> None:
    result = run_module("src", "train-cloud", "--dry-run", *argv, env=sky_env(tmp_path))
    assert result.returncode == 2
    assert argv[0] in only_error_line(result.stderr) or argv[0] in result.stderr
    assert result.stdout == "", "no command printed"


@needs_sky
def test_task_file_with_several_nodes_passes_skypilot_schema(tmp_path: Path) -> None:
    task_file = load_settings(environ={}).cloud.task_file
    several = tmp_path / "sky_task.yaml"
    several.write_text(task_file.read_text(encoding="utf-8").replace("num_nodes: 1", "num_nodes: 2"), encoding="utf-8")
    code = "import sys, sky; task = sky.Task.from_yaml(sys.argv[1]); print(task.num_nodes)"
    result = subprocess.run(
        [sys.executable, "-c", code, str(several)], env=sky_env(tmp_path),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "2"


@needs_sky
def test_launch_without_credentials_fails_clearly(tmp_path: Path) -> None:
    infra = load_settings(environ={}).cloud.infra
    result = run_module("src", "train-cloud", env=sky_env(tmp_path))
    assert result.returncode == 2
    assert f"{infra.split('/')[0]} has no usable credentials" in result.stderr
    assert "Traceback" not in result.stderr
    assert not sky_api_servers()
