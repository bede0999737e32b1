"""`uv run train-cloud`: launch the training task on the configured cloud with SkyPilot.

Builds `sky launch -c <cluster> sky_task.yaml --infra <cloud> ...` from
configs/settings.yaml (`--managed`: `sky jobs launch`, which recovers from spot
preemption), validates the task and the cloud's credentials offline, then hands over
to `sky`. `--dry-run` prints the command after the offline validation and stops.
Every flag is a settings override, validated like the file. Everything set locally
reaches the cloud run: each `SECTION__FIELD` variable and `SETTINGS_FILE` are passed with
`--env`, so the cloud trains with exactly the settings `--dry-run` shows; secrets are
passed by name only. Unknown arguments are passed to sky (`-y`, `--env KEY=VALUE`, ...).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from src import flags
from src.contract import Task
from src.errors import UserError
from src.settings import PROJECT_ROOT, Settings, load_settings
from src.settings_sources import SETTINGS_FILE_ENV, env_override_names

SECRETS = ("HF_TOKEN",)
INSTALL_HINT = "SkyPilot is not installed: run `uv sync --group cloud` (or `uv sync --all-groups`)"


class CloudError(UserError):
    """The launch cannot go ahead; the message names the cloud or file and the fix."""


def task_envs(task_file: Path) -> set[str]:
    """Variables the task file sets itself (they win over forwarded local values)."""
    try:
        task = yaml.safe_load(task_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return set()
    envs = task.get("envs") if isinstance(task, dict) else None
    return set(envs) if isinstance(envs, dict) else set()


def forwarded_env(
    environ: Mapping[str, str], task_file: Path, schema: type[Settings]
) -> tuple[list[tuple[str, str]], list[str]]:
    """(name, value) of every settings override (a field of `schema`) to pass to the cloud run, and those the
    task file sets."""
    own = task_envs(task_file)
    names = env_override_names(environ, schema)
    forwarded = [(name, environ[name]) for name in names if name not in own]
    if environ.get(SETTINGS_FILE_ENV):
        settings_file = Path(environ[SETTINGS_FILE_ENV])
        absolute = settings_file if settings_file.is_absolute() else PROJECT_ROOT / settings_file
        try:
            relative = absolute.resolve().relative_to(PROJECT_ROOT)
        except ValueError:
            raise CloudError(
                f"{SETTINGS_FILE_ENV}={settings_file} is outside the project, so the cloud run cannot see it "
                "(the project folder is what SkyPilot uploads): move it into the project"
            ) from None
        forwarded.append((SETTINGS_FILE_ENV, str(relative)))
    return forwarded, [name for name in names if name in own]


def build_command(settings: Settings, passthrough: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The sky command line. Secrets are passed by name: sky reads their values itself."""
    cloud = settings.cloud
    name = cloud.cluster_name
    command = ["sky", "jobs", "launch", "--name", name] if cloud.managed else ["sky", "launch", "--cluster", name]
    command += [str(cloud.task_file), "--infra", cloud.infra, "--num-nodes", str(cloud.num_nodes)]
    if cloud.gpus:
        command += ["--gpus", cloud.gpus]
    if cloud.use_spot:
        command.append("--use-spot")
    if not cloud.managed:
        if cloud.idle_minutes_to_autostop is not None:
            command += ["--idle-minutes-to-autostop", str(cloud.idle_minutes_to_autostop)]
        if cloud.down:
            command.append("--down")
    forwarded, _ = forwarded_env(environ, cloud.task_file, type(settings))
    if "TRAINING__RUN_NAME" not in dict(forwarded):
        forwarded.insert(0, ("TRAINING__RUN_NAME", settings.training.run_name))
    if settings.promotion.after_training and "PROMOTION__AFTER_TRAINING" not in dict(forwarded):
        forwarded.append(("PROMOTION__AFTER_TRAINING", "true"))  # --promote: the cloud run gates itself
    for key, value in forwarded:
        command += ["--env", f"{key}={value}"]
    for secret in SECRETS:
        if environ.get(secret):
            command += ["--secret", secret]
    return [*command, *passthrough]


def _isolate_skypilot() -> None:
    """Keep the in-process checks from starting SkyPilot's background API server."""
    os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")


def validate_task(task_file: Path, setting: str = "cloud.task_file") -> None:
    """SkyPilot's own schema check, offline: typos come back with its "did you mean" hint."""
    if not task_file.is_file():
        raise CloudError(f"{task_file}: task file not found ({setting} in configs/settings.yaml)")
    if importlib.util.find_spec("sky") is None:
        raise CloudError(INSTALL_HINT)
    _isolate_skypilot()
    import sky

    try:
        sky.Task.from_yaml(str(task_file))
    except Exception as error:  # SkyPilot raises several types for schema problems
        raise CloudError(f"{task_file}: invalid SkyPilot task: {error}") from None


def check_credentials(infra: str) -> None:
    """Ask SkyPilot whether the cloud is usable; `sky check`'s exit code says nothing."""
    _isolate_skypilot()
    from sky.clouds.cloud import CloudCapability
    from sky.utils import registry

    cloud_name = infra.split("/")[0]
    cloud = registry.CLOUD_REGISTRY.from_str(cloud_name)
    if cloud is None:
        raise CloudError(f"unknown cloud {cloud_name!r}: use gcp, aws or azure")
    ok, reason = cloud.check_credentials(CloudCapability.COMPUTE)
    if not ok:
        raise CloudError(f"{cloud_name} has no usable credentials, so nothing was launched.\n{reason}")


def main(argv: Sequence[str], task: Task[Any]) -> int:
    args, passthrough = flags.TRAIN_CLOUD.parse_known(argv)
    settings = load_settings(task.settings, flags=flags.TRAIN_CLOUD.settings_flags(args))
    command = build_command(settings, passthrough, os.environ)
    validate_task(settings.cloud.task_file)
    if args.dry_run:
        print(shlex.join(command))
        _, kept = forwarded_env(os.environ, settings.cloud.task_file, task.settings)
        for name in kept:
            print(f"note: {name} is not forwarded: {settings.cloud.task_file.name} sets it", file=sys.stderr)
        return 0
    hand_over_to_sky(settings.cloud.infra, command)


def hand_over_to_sky(infra: str, command: list[str]) -> NoReturn:
    """Check the cloud's credentials, then replace this process with the `sky` command."""
    check_credentials(infra)
    sky_cli = shutil.which("sky")
    if sky_cli is None:
        raise CloudError(INSTALL_HINT)
    print(f"+ {shlex.join(command)}", flush=True)
    os.execv(sky_cli, command)
