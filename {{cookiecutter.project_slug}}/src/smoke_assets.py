"""The tiny offline model and data of `--smoke`: where a set lives, and how it is built once.

The task writes a set (`Task.smoke(folder, seed)`: model/, train.jsonl, eval.jsonl, all of it
deterministic for a seed); this module decides where (`<training.output_dir>/.smoke/seed-<seed>`,
so a smoke run with another seed never rewrites what an earlier run was trained and is
evaluated on), builds it at most once (under a lock, so launchers started side by side build
one at a time; in a staging folder renamed into place, so a set is complete or absent), and
points the settings at it. No torch here: the task's writer imports it.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ASSETS_DIR = ".smoke"
COMPLETE_MARKER = ".complete"


def assets_dir(output_dir: Path, seed: int) -> Path:
    return output_dir / ASSETS_DIR / f"seed-{seed}"


def files(folder: Path) -> dict[str, Path]:
    return {"model": folder / "model", "train": folder / "train.jsonl", "eval": folder / "eval.jsonl"}


def staging_prefix(folder: Path) -> str:
    return f".tmp-{folder.name}-"  # one seed's own: another seed's builder, under its own lock, keeps its staging


def build(folder: Path, seed: int, write: Callable[[Path, int], None]) -> dict[str, Path]:
    """The set for `seed` in `folder`, written by `write(staging, seed)` unless a complete one is there."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    marker = f"seed={seed}\n"
    with (folder.parent / f"{folder.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for stale in folder.parent.glob(f"{staging_prefix(folder)}*"):
            shutil.rmtree(stale, ignore_errors=True)  # a builder killed midway left it; this one holds the lock
        done = folder / COMPLETE_MARKER
        if not done.is_file() or done.read_text(encoding="utf-8") != marker:
            staging = Path(tempfile.mkdtemp(prefix=staging_prefix(folder), dir=folder.parent))
            try:
                write(staging, seed)
                (staging / COMPLETE_MARKER).write_text(marker, encoding="utf-8")
                if folder.exists():
                    shutil.rmtree(folder)
                staging.rename(folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return files(folder)


def overrides(assets: dict[str, Path]) -> dict[str, Any]:
    """The settings `configs/smoke.yaml` cannot know: where the set is."""
    return {
        "model": {"checkpoint": str(assets["model"])},
        "data": {"train_file": str(assets["train"]), "eval_file": str(assets["eval"])},
    }
