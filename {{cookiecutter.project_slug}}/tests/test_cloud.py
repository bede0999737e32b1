"""train-cloud, offline: SkyPilot's own schema check, the built commands, the preflight.

SkyPilot is imported in a subprocess with its API server disabled and a private port,
so nothing is left running; each test that touches sky asserts that.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.cloud.launch import build_command, parse_args
from src.config import PROJECT_ROOT, load_settings

needs_sky = pytest.mark.skipif(
    importlib.util.find_spec("sky") is None, reason="SkyPilot not installed (uv sync --group cloud)"
)


def sky_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if "__" not in key and key != "HF_TOKEN"}
    return {
        **env,
        "HOME": str(tmp_path),  # no cloud credentials, no ~/.sky state
        "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1",
        "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
        "SKYPILOT_API_SERVER_LOCAL_PORT": "46581",
        # Credential lookups must not probe cloud metadata servers from a test machine.
        "NO_GCE_CHECK": "True",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def sky_api_servers() -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "sky.server.server" in cmdline or "sky/server/server.py" in cmdline:
            found.append(cmdline)
    return found


def run_module(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def command_for(*argv: str, environ: dict[str, str] | None = None) -> list[str]:
    settings = load_settings(environ={})
    args, passthrough = parse_args(list(argv))
    return build_command(settings.cloud, args, passthrough, environ or {}, settings.training.run_name)


def test_cluster_command_uses_configured_cloud() -> None:
    cloud = load_settings(environ={}).cloud
    command = command_for()
    assert command[:4] == ["sky", "launch", "--cluster", cloud.cluster_name]
    assert command[command.index("--infra") + 1] == cloud.infra
    assert str(cloud.task_file) in command
    assert "--secret" not in command


@pytest.mark.parametrize("infra", ["gcp", "aws", "azure", "aws/us-east-1"])
def test_managed_job_command_for_every_cloud(infra: str) -> None:
    command = command_for("--managed", "--infra", infra, "--gpus", "A100:1", "--spot")
    assert command[:3] == ["sky", "jobs", "launch"]
    assert command[command.index("--infra") + 1] == infra
    assert command[command.index("--gpus") + 1] == "A100:1"
    assert "--use-spot" in command
    assert "--down" not in command, "managed jobs clean up by themselves"


def test_secret_is_passed_by_name_only() -> None:
    command = command_for("-y", environ={"HF_TOKEN": "hf_very_secret"})
    assert command[command.index("--secret") + 1] == "HF_TOKEN"
    assert "hf_very_secret" not in " ".join(command)
    assert command[-1] == "-y", "unknown arguments pass through to sky"


def test_autostop_and_down_from_settings() -> None:
    cloud = load_settings(environ={}).cloud
    command = command_for()
    if cloud.idle_minutes_to_autostop is not None:
        assert command[command.index("--idle-minutes-to-autostop") + 1] == str(cloud.idle_minutes_to_autostop)
    assert ("--down" in command) == cloud.down


def test_run_name_reaches_the_cloud_run() -> None:
    run_name = load_settings(environ={}).training.run_name
    assert f"TRAINING__RUN_NAME={run_name}" in command_for()


def test_parse_args_keeps_unknown_flags() -> None:
    args, rest = parse_args(["--dry-run", "--env", "A=1"])
    assert isinstance(args, argparse.Namespace)
    assert args.dry_run
    assert rest == ["--env", "A=1"]


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
    env = {**sky_env(tmp_path), "CLOUD__TASK_FILE": str(broken)}
    result = run_module("src.cloud.launch", "--dry-run", env=env)
    assert result.returncode == 2
    assert "workdri" in result.stderr
    assert "did you mean" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert not sky_api_servers()


@needs_sky
def test_dry_run_prints_command_and_contacts_nothing(tmp_path: Path) -> None:
    result = run_module("src.cloud.launch", "--dry-run", env=sky_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    infra = load_settings(environ={}).cloud.infra
    assert result.stdout.startswith("sky launch ")
    assert f"--infra {infra}" in result.stdout
    assert not sky_api_servers()


@needs_sky
def test_launch_without_credentials_fails_clearly(tmp_path: Path) -> None:
    infra = load_settings(environ={}).cloud.infra
    result = run_module("src.cloud.launch", env=sky_env(tmp_path))
    assert result.returncode == 2
    assert f"{infra.split('/')[0]} has no usable credentials" in result.stderr
    assert "Traceback" not in result.stderr
    assert not sky_api_servers()
