"""train-cloud's command line, built from settings, flags and the environment (no SkyPilot needed)."""

from __future__ import annotations

import shlex

import pytest

from src.cloud.train_cloud import build_command, forwarded_env
from src.config import PROJECT_ROOT, Settings, SettingsError, load_settings
from src.flags import TRAIN_CLOUD


def command_for(*argv: str, environ: dict[str, str] | None = None) -> list[str]:
    environ = environ or {}
    args, passthrough = TRAIN_CLOUD.parse_known(list(argv))
    return build_command(load_settings(environ=environ, flags=TRAIN_CLOUD.settings_flags(args)), passthrough, environ)


def value_after(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_cluster_command_uses_configured_cloud() -> None:
    cloud = load_settings(environ={}).cloud
    command = command_for()
    assert command[:4] == ["sky", "launch", "--cluster", cloud.cluster_name]
    assert value_after(command, "--infra") == cloud.infra
    assert value_after(command, "--num-nodes") == "1"
    assert str(cloud.task_file) in command
    assert "--secret" not in command


@pytest.mark.parametrize("infra", ["gcp", "aws", "azure", "aws/us-east-1"])
def test_managed_job_command_for_every_cloud(infra: str) -> None:
    command = command_for("--managed", "--infra", infra, "--gpus", "A100:1", "--spot")
    assert command[:3] == ["sky", "jobs", "launch"]
    assert value_after(command, "--infra") == infra
    assert value_after(command, "--gpus") == "A100:1"
    assert "--use-spot" in command
    assert "--down" not in command, "managed jobs clean up by themselves"


def test_secret_is_passed_by_name_only() -> None:
    command = command_for("-y", environ={"HF_TOKEN": "hf_very_secret"})
    assert value_after(command, "--secret") == "HF_TOKEN"
    assert "hf_very_secret" not in " ".join(command)
    assert command[-1] == "-y", "unknown arguments pass through to sky"


def test_autostop_and_down_from_settings() -> None:
    cloud = load_settings(environ={}).cloud
    command = command_for()
    if cloud.idle_minutes_to_autostop is not None:
        assert value_after(command, "--idle-minutes-to-autostop") == str(cloud.idle_minutes_to_autostop)
    assert ("--down" in command) == cloud.down


def test_every_local_override_reaches_the_cloud_run() -> None:
    environ = {"TRAINING__MAX_STEPS": "10", "MODEL__MAX_LENGTH": "128", "UNRELATED__THING": "x", "HOME": "/root"}
    command = command_for("--num-nodes", "2", environ=environ)
    envs = [command[index + 1] for index, word in enumerate(command) if word == "--env"]
    assert "TRAINING__MAX_STEPS=10" in envs
    assert "MODEL__MAX_LENGTH=128" in envs
    assert f"TRAINING__RUN_NAME={load_settings(environ={}).training.run_name}" in envs
    assert not any(env.startswith(("UNRELATED__", "HOME=")) for env in envs), "only real settings are forwarded"
    assert value_after(command, "--num-nodes") == "2"


def test_output_dir_stays_on_the_bucket_the_task_file_names() -> None:
    task_file = load_settings(environ={}).cloud.task_file
    forwarded, kept = forwarded_env({"TRAINING__OUTPUT_DIR": "/tmp/local-runs"}, task_file, Settings)
    assert kept == ["TRAINING__OUTPUT_DIR"]
    assert "TRAINING__OUTPUT_DIR" not in dict(forwarded)


def test_settings_file_is_forwarded_relative_to_the_project() -> None:
    forwarded, _ = forwarded_env({"SETTINGS_FILE": str(PROJECT_ROOT / "configs" / "settings.yaml")}, PROJECT_ROOT,
                                 Settings)  # fmt: skip
    assert ("SETTINGS_FILE", "configs/settings.yaml") in forwarded


def test_dry_run_output_is_one_shell_line_with_quoting() -> None:
    command = command_for(environ={"PROJECT__NAME": "two words"})
    assert "PROJECT__NAME=two words" in shlex.split(shlex.join(command))


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--infra", "oracle"], r"cloud\.infra.*\[flag: --infra\]"),
        (["--gpus", "L4:abc"], r"cloud\.gpus.*\[flag: --gpus\]"),
        (["--cluster", "Bad Name!"], r"cloud\.cluster_name.*\[flag: --cluster\]"),
        (["--num-nodes", "0"], r"cloud\.num_nodes.*\[flag: --num-nodes\]"),
    ],
)
def test_bad_flags_fail_like_bad_settings(argv: list[str], field: str) -> None:
    with pytest.raises(SettingsError, match=field):
        command_for(*argv)


def test_parse_args_keeps_unknown_flags() -> None:
    args, rest = TRAIN_CLOUD.parse_known(["--dry-run", "--env", "A=1"])
    assert args.dry_run
    assert rest == ["--env", "A=1"]


def test_promote_makes_the_cloud_run_gate_itself() -> None:
    """train-cloud --promote: the cloud's train-local reads PROMOTION__AFTER_TRAINING and runs the gate there."""
    assert "PROMOTION__AFTER_TRAINING=true" in command_for("--promote")
    assert not any(part.startswith("PROMOTION__") for part in command_for())
