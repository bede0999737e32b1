"""Which Trainer checkpoint an unfinished run resumes from (src/weights.py says what is complete), and the
record of each checkpoint's files that lets a resume tell a swapped file (ManifestCallback)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from src import runs
from src.fingerprints import sha256
from src.weights import CHECKPOINT_MANIFEST, ModelFiles, checkpoint_problem

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


class ManifestCallback(TrainerCallback):
    """Once the Trainer has saved a checkpoint, record the sha256 of its files (main process): a resume then
    sets aside a checkpoint whose optimizer, scheduler or weights were swapped for another file. The random
    states each process writes for itself are left out (they may still be written)."""

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        checkpoint = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
        if not state.is_world_process_zero or not checkpoint.is_dir():
            return
        files = {path.name: sha256(path) for path in sorted(checkpoint.iterdir())
                 if path.is_file() and not path.name.startswith(("rng_state", CHECKPOINT_MANIFEST))}  # fmt: skip
        runs.write_json(checkpoint / CHECKPOINT_MANIFEST, files)
