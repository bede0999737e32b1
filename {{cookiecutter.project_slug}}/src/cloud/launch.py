"""`uv run train-cloud`: launch the training task on the configured cloud with SkyPilot.

Builds `sky launch -c <cluster> sky_task.yaml --infra <cloud> ...` from
configs/settings.yaml (`--managed`: `sky jobs launch`, which recovers from spot
preemption), validates the task and the cloud's credentials offline, then hands over
to `sky`. `--dry-run` prints the command after the offline validation and stops.
Unknown arguments are passed to sky (`-y`, `--env KEY=VALUE`, ...).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from src.config import CloudSettings, SettingsError, load_settings

SECRETS = ("HF_TOKEN",)
INSTALL_HINT = "SkyPilot is not installed: run `uv sync --group cloud` (or `uv sync --all-groups`)"


class CloudError(Exception):
    """The launch cannot go ahead; the message names the cloud or file and the fix."""


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description="Fine-tune on the cloud with SkyPilot.")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the command only")
    parser.add_argument("--managed", action="store_true", default=None, help="managed job (spot recovery)")
    parser.add_argument("--infra", help="cloud[/region], e.g. aws or gcp/us-central1")
    parser.add_argument("--gpus", help="accelerators, e.g. L4:1 (default: the choices in the task file)")
    parser.add_argument("--spot", action="store_true", default=None, help="use spot/preemptible capacity")
    parser.add_argument("--cluster", help="cluster or managed-job name")
    return parser.parse_known_args(argv)


def build_command(
    cloud: CloudSettings, args: argparse.Namespace, passthrough: Sequence[str], environ: dict[str, str], run_name: str
) -> list[str]:
    """The sky command line. Secrets are passed by name: sky reads their values itself."""
    managed = cloud.managed if args.managed is None else args.managed
    use_spot = cloud.use_spot if args.spot is None else args.spot
    name = args.cluster or cloud.cluster_name
    command = ["sky", "jobs", "launch", "--name", name] if managed else ["sky", "launch", "--cluster", name]
    command += [str(cloud.task_file), "--infra", args.infra or cloud.infra]
    gpus = args.gpus or cloud.gpus
    if gpus:
        command += ["--gpus", gpus]
    if use_spot:
        command.append("--use-spot")
    if not managed:
        if cloud.idle_minutes_to_autostop is not None:
            command += ["--idle-minutes-to-autostop", str(cloud.idle_minutes_to_autostop)]
        if cloud.down:
            command.append("--down")
    command += ["--env", f"TRAINING__RUN_NAME={run_name}"]
    for secret in SECRETS:
        if environ.get(secret):
            command += ["--secret", secret]
    return [*command, *passthrough]


def _isolate_skypilot() -> None:
    """Keep the in-process checks from starting SkyPilot's background API server."""
    os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")


def validate_task(task_file: Path) -> None:
    """SkyPilot's own schema check, offline: typos come back with its "did you mean" hint."""
    if not task_file.is_file():
        raise CloudError(f"{task_file}: task file not found (cloud.task_file in configs/settings.yaml)")
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


def main(argv: Sequence[str] | None = None) -> int:
    args, passthrough = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings()
        command = build_command(settings.cloud, args, passthrough, dict(os.environ), settings.training.run_name)
        validate_task(settings.cloud.task_file)
        if args.dry_run:
            print(shlex.join(command))
            return 0
        check_credentials(args.infra or settings.cloud.infra)
        sky_cli = shutil.which("sky")
        if sky_cli is None:
            raise CloudError(INSTALL_HINT)
    except (SettingsError, CloudError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"+ {shlex.join(command)}", flush=True)
    os.execv(sky_cli, command)
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main())
