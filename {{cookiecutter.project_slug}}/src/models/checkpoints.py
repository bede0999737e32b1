"""Which Trainer checkpoint an unfinished run resumes from (src/weights.py says what is complete)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from src.weights import ModelFiles, checkpoint_problem

logger = logging.getLogger(__name__)
DAMAGED_PREFIX = "damaged-"


def checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[-1])


def last_checkpoint(checkpoint_dir: Path, files: ModelFiles) -> Path | None:
    """The newest checkpoint that can be resumed from; damaged newer ones are set aside.

    A damaged checkpoint is renamed `damaged-checkpoint-<step>` (the Trainer ignores it and the
    folder goes when the run finishes) and the one before it is used, or the run starts afresh.
    """
    candidates = [path for path in checkpoint_dir.glob("checkpoint-*") if path.name.split("-")[-1].isdigit()]
    for candidate in sorted(candidates, key=checkpoint_step, reverse=True):
        problem = checkpoint_problem(candidate, files)
        if problem is None:
            return candidate
        aside = candidate.with_name(f"{DAMAGED_PREFIX}{candidate.name}")
        shutil.rmtree(aside, ignore_errors=True)
        candidate.rename(aside)
        logger.warning("Checkpoint %s is damaged (%s): set aside as %s", candidate, problem, aside.name)
    return None
