"""Where finished runs live, and how they are published without half-written states.

A run is built in a hidden temporary folder, then renamed to `<output_dir>/<run_name>`;
only then does the `latest` pointer (a relative symlink, replaced atomically) move to it.
The server reads `latest`, so a crash at any point leaves it on the previous good model.
Light on imports on purpose: the serving path uses it.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

LATEST = "latest"
TEMP_PREFIX = ".tmp-"


class ModelNotFoundError(Exception):
    """No finished model where one was expected; the message says how to make one."""


def new_staging_dir(output_dir: Path, run_name: str) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{run_name}-", dir=output_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; a published model is not
    return staging


def publish(staging_dir: Path, output_dir: Path, run_name: str) -> Path:
    """Move a complete staging folder to `<output_dir>/<run_name>` and point `latest` at it."""
    final = output_dir / run_name
    previous = None
    if final.exists():
        previous = output_dir / f"{TEMP_PREFIX}{run_name}-replaced-{uuid.uuid4().hex[:8]}"
        final.rename(previous)
    staging_dir.rename(final)
    _point_latest(output_dir, run_name)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return final


def _point_latest(output_dir: Path, run_name: str) -> None:
    link = output_dir / LATEST
    temporary = output_dir / f"{TEMP_PREFIX}{LATEST}-{uuid.uuid4().hex[:8]}"
    try:
        temporary.symlink_to(run_name, target_is_directory=True)
    except OSError:
        # No symlinks (some bucket mounts, Windows without developer mode): a text file
        # holding the run name does the same job for resolve_model_dir.
        temporary.write_text(run_name + "\n", encoding="utf-8")
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    temporary.replace(link)


def remove_stale_staging(output_dir: Path, run_name: str) -> None:
    """Drop what an interrupted run of the same name left behind."""
    for stale in output_dir.glob(f"{TEMP_PREFIX}{run_name}-*"):
        shutil.rmtree(stale, ignore_errors=True)


def resolve_model_dir(path: Path) -> Path:
    """Follow the `latest` pointer (symlink or text file) to a folder holding a model."""
    if path.is_file() and not (path / "config.json").exists():
        path = path.parent / path.read_text(encoding="utf-8").strip()
    path = path.resolve()
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"no trained model at {path}: run `uv run train-local` to fine-tune one "
            "(or `uv run train-local --smoke` for a tiny offline model), "
            "or point serving.model_dir / --model-dir at a saved model folder"
        )
    return path
