"""`uv run serve-cloud`: serve a trained model on the cloud with SkyServe.

Builds `sky serve up sky_serve.yaml --service-name <name> --infra <cloud> ...` from
configs/settings.yaml. By default the replicas serve the promoted run on the training bucket
(`models/production`, which `train-cloud --promote` moves; the newest finished run that
`uv run train-cloud` wrote there where none was promoted); `--run <run id>` picks another run
there, and `--model-dir <folder>` uploads a model folder from this machine instead (after
the same check `uv run serve` makes), with the base model it loads beside it when that is a
local folder (the base model a run's weights apply to: the replicas could not find it otherwise). The spec is
validated offline with SkyPilot's own schema, then the cloud's credentials, then it hands over
to `sky`; `--dry-run` stops after the schema check and prints the command. The API key (LIT_SERVER_API_KEY) goes to the
replicas as a secret, by name only. Local `SECTION__FIELD` overrides (SERVING__PRECISION=fp32,
...) reach the replicas with `--env`, as with train-cloud. Unknown arguments pass to sky.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from src import flags, model_folder, runs
from src.cloud.train_cloud import (
    INSTALL_HINT,
    CloudError,
    check_credentials,
    forwarded_env,
    hand_over_to_sky,
    validate_task,
)
from src.contract import Task
from src.deployment.http_guard import API_KEY_ENV
from src.runs import PRODUCTION, RUN_INFO
from src.settings import Settings, load_settings

BUCKET_MODELS = "/checkpoints/models"  # where sky_task.yaml puts training.output_dir on the bucket
UPLOADED_MODEL = "/model"
UPLOADED_BASE = "/base-model"  # the base model a run applies to, when it is a local folder
MODEL_DIR_ENV = "SERVING__MODEL_DIR"


def model_source(args: argparse.Namespace, task: Task[Any]) -> tuple[str, dict[str, Path]]:
    """(model folder on the replicas, {replica path: local folder} to upload)."""
    if args.model_dir is not None:
        folder = task.inspect(model_folder.resolve(args.model_dir.expanduser().resolve(), task.model_files))
        base = task.serving.local_base(folder)
        if base is None:
            return UPLOADED_MODEL, {UPLOADED_MODEL: folder.path}
        return UPLOADED_MODEL, {UPLOADED_MODEL: with_base_at(folder.path, base, UPLOADED_BASE), UPLOADED_BASE: base}
    if args.run is not None:
        run = str(args.run)
        if run in {"", ".", ".."} or "/" in run or run.startswith("."):
            raise CloudError(f"--run {run!r}: give a run id such as smoke-20261202-153000 (see `uv run compare`)")
        return f"{BUCKET_MODELS}/{run}", {}
    return f"{BUCKET_MODELS}/{PRODUCTION}", {}  # the promoted run (the newest where none was: serve's fallback)


def with_base_at(run: Path, base: Path, replica_path: str) -> Path:
    """A copy of `run` whose run.json names its base model where the replicas find it (the recorded
    fingerprint of the base model's files still holds: the same files, somewhere else)."""
    copy = Path(tempfile.mkdtemp(prefix="serve-cloud-run-")) / run.name
    shutil.copytree(run, copy, symlinks=False)
    info = model_folder.run_info(copy)
    info["base_model"] = replica_path
    if isinstance(recorded := info.get("inputs", {}).get("model.checkpoint"), dict):
        recorded["path"] = replica_path
    (copy / RUN_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return copy


def spec_with_upload(service_file: Path, uploads: Mapping[str, Path]) -> Path:
    """A copy of the service file that uploads each local folder to its path on the replicas, in place of the
    training bucket's mount (the model is not read from there, and mounting would create the bucket)."""
    spec = yaml.safe_load(service_file.read_text(encoding="utf-8"))
    if not isinstance(spec, dict):
        raise CloudError(f"{service_file}: expected a SkyPilot service spec (a mapping)")
    spec["workdir"] = str(service_file.parent.resolve())  # the copy lives elsewhere
    mounts = spec.get("file_mounts") or {}
    mounts.pop(str(Path(BUCKET_MODELS).parent), None)
    spec["file_mounts"] = {**mounts, **{remote: str(local) for remote, local in uploads.items()}}
    target = Path(tempfile.mkdtemp(prefix="serve-cloud-")) / service_file.name
    target.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return target


SERVICES = ".services.json"  # under training.output_dir: the services serve-cloud started from this project


def started_here(settings: Settings) -> dict[str, Any]:
    """{service name: what serve-cloud recorded when it started it}."""
    path = settings.training.output_dir / SERVICES
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def note_started(settings: Settings) -> None:
    cloud = settings.cloud
    recorded = {
        **started_here(settings),
        cloud.service_name: {"infra": cloud.infra, "at": runs.timestamp(runs.now_utc())},
    }
    settings.training.output_dir.mkdir(parents=True, exist_ok=True)
    runs.write_text(settings.training.output_dir / SERVICES, json.dumps(recorded, indent=2))


def build_command(
    settings: Settings, spec: Path, model_dir: str, passthrough: Sequence[str], environ: Mapping[str, str],
    update: bool = False,
) -> list[str]:  # fmt: skip
    """The sky command line: `sky serve up`, or `sky serve update --mode rolling` for a running service (its
    replicas replaced one at a time, the endpoint answering throughout). The API key is passed by name."""
    cloud = settings.cloud
    if update:
        command = ["sky", "serve", "update", cloud.service_name, str(spec), "--mode", "rolling", "--infra", cloud.infra]
    else:
        command = ["sky", "serve", "up", str(spec), "--service-name", cloud.service_name, "--infra", cloud.infra]
    if cloud.gpus:
        command += ["--gpus", cloud.gpus]
    if cloud.service_use_spot:
        command.append("--use-spot")
    forwarded, _ = forwarded_env(environ, cloud.service_file, type(settings))
    forwarded = [(key, value) for key, value in forwarded if key != MODEL_DIR_ENV]
    for key, value in [(MODEL_DIR_ENV, model_dir), *forwarded]:
        command += ["--env", f"{key}={value}"]
    command += ["--secret", API_KEY_ENV]
    return [*command, *passthrough]


def main(argv: Sequence[str], task: Task[Any]) -> int:
    args, passthrough = flags.SERVE_CLOUD.parse_known(argv)
    settings = load_settings(task.settings, flags=flags.SERVE_CLOUD.settings_flags(args))
    service_file = settings.cloud.service_file
    validate_task(service_file, setting="cloud.service_file")
    model_dir, uploads = model_source(args, task)
    spec = spec_with_upload(service_file, uploads) if uploads else service_file
    if uploads:
        validate_task(spec, setting="cloud.service_file")
    update = args.update or (not args.up and settings.cloud.service_name in started_here(settings))
    command = build_command(settings, spec, model_dir, passthrough, os.environ, update)
    if update and not args.update:  # from the local record: the service may have been taken down since
        print(f"note: service {settings.cloud.service_name} was started from this project "
              f"({settings.training.output_dir / SERVICES}): a rolling update; --up starts it anew",
              file=sys.stderr)  # fmt: skip
    if args.dry_run:
        print(shlex.join(command))
        print(f"dry run: {service_file.name} passes SkyPilot's schema; this would be "
              f"{'a rolling update of' if update else 'a new'} service {settings.cloud.service_name}",
              file=sys.stderr)  # fmt: skip
        if not os.environ.get(API_KEY_ENV):
            print(f"note: set {API_KEY_ENV} before the real launch: the replicas require it", file=sys.stderr)
        return 0
    if not os.environ.get(API_KEY_ENV):
        raise CloudError(
            f"{API_KEY_ENV} is not set: the service would be open to anyone who finds its address. "
            f"Set it (e.g. export {API_KEY_ENV}=$(openssl rand -hex 24)) and run serve-cloud again"
        )
    if not update:
        check_credentials(settings.cloud.infra)  # before the note: nothing is written when nothing launches
        if shutil.which("sky") is None:
            raise CloudError(INSTALL_HINT)
        note_started(settings)  # the next serve-cloud of this service updates it in place
    hand_over_to_sky(settings.cloud.infra, command)
