"""Smoke settings for a test's own folder, and the ways a model folder or a checkpoint gets damaged.

The damages every model has (its weights and config, the files Task.model_files names) are
here; each task adds its own (tests/task/samples.py), and the tests run them all.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from src import smoke_assets
from src.config import DEFAULT_SETTINGS_FILE, SMOKE_SETTINGS_FILE, Settings, load_settings
from src.task import TASK
from tests.helpers.files import republish, set_tensors, truncate
from tests.task import samples

WEIGHTS = TASK.model_files.weights[0]
CONFIG = TASK.model_files.config


def smoke_settings(assets: dict[str, Path], output_dir: Path, environ: dict[str, str] | None = None,
                   **training: Any) -> Settings:  # fmt: skip
    """configs/smoke.yaml writing under output_dir; keywords override training.*, `environ` plays the shell."""
    overrides = smoke_assets.overrides(assets)
    overrides["training"] = {"output_dir": str(output_dir), **training}
    return load_settings(DEFAULT_SETTINGS_FILE, environ=environ or {}, overlays=[SMOKE_SETTINGS_FILE],
                         overrides=overrides)  # fmt: skip


def build_smoke_assets(folder: Path, seed: int | None = None) -> dict[str, Path]:
    """The task's smoke set in `folder`, as `train-local --smoke` builds it (its seed unless one is given)."""
    return smoke_assets.build(folder, smoke_file_settings().training.seed if seed is None else seed, TASK.smoke)


@functools.cache
def _launcher_assets() -> Path:
    """What `train-local --smoke` builds before it trains (with its seed), built once per test run."""
    target = Path(tempfile.mkdtemp(prefix="smoke-assets-")) / "assets"
    atexit.register(shutil.rmtree, target.parent, True)
    build_smoke_assets(target)
    return target


def launcher_assets_dir(output_dir: Path) -> Path:
    """Where `train-local --smoke` keeps its smoke set under a runs folder."""
    return smoke_assets.assets_dir(output_dir, smoke_file_settings().training.seed)


def with_smoke_assets(output_dir: Path) -> Path:
    """A runs folder that already holds the smoke assets a first smoke run would build (it keeps a complete set).

    Each launch then skips the seconds of building them; the tests run with `fresh=True` build them themselves.
    """
    if not launcher_assets_dir(output_dir).exists():
        shutil.copytree(_launcher_assets(), launcher_assets_dir(output_dir))
    return output_dir


def smoke_file_settings() -> Settings:
    """What configs/smoke.yaml says, for the numbers tests expect (steps, batch size, intervals)."""
    return load_settings(DEFAULT_SETTINGS_FILE, environ={}, overlays=[SMOKE_SETTINGS_FILE])


def copy_run(run_dir: Path, target: Path) -> Path:
    """A copy of a published run, for a test that writes into it or damages it: as published, without
    what serving made of the shared run since (samples.MADE_BY_SERVING: read-only, but not to root)."""
    copied = target / run_dir.name

    def made_by_serving(folder: str, _: list[str]) -> list[str]:
        return list(samples.MADE_BY_SERVING) if folder == str(run_dir) else []

    shutil.copytree(run_dir, copied, symlinks=True, ignore=made_by_serving)
    return copied


def _remove_tokenizer(model: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "chat_template.jinja",
                 "special_tokens_map.json"):  # fmt: skip
        (model / name).unlink(missing_ok=True)


def _replace_with_a_file(model: Path) -> None:
    shutil.rmtree(model)
    model.write_text("not a folder", encoding="utf-8")


# How a published model folder can be unfit to serve: each must be refused before serving.
MODEL_DAMAGES: dict[str, Callable[[Path], object]] = {
    "no-tokenizer": _remove_tokenizer,
    "truncated-weights": lambda model: truncate(model / WEIGHTS, (model / WEIGHTS).stat().st_size // 2),
    "tiny-weights": lambda model: truncate(model / WEIGHTS),  # what `truncate -s 100` does
    "garbage-weights": lambda model: (model / WEIGHTS).write_bytes(os.urandom((model / WEIGHTS).stat().st_size)),
    "no-weights": lambda model: (model / WEIGHTS).unlink(),
    "config-not-json": lambda model: (model / CONFIG).write_text("{ this is not json", encoding="utf-8"),
    "bad-tokenizer": lambda model: (model / "tokenizer.json").write_text('{"version": "1.0", "model": 42}'),
    "a-file": _replace_with_a_file,
    "nan-weights": lambda model: set_tensors(model / WEIGHTS, float("nan")),  # a run whose training diverged
    "weights-rewritten": lambda model: set_tensors(model / WEIGHTS, 0.5),  # complete, finite, not what was trained
    **samples.MODEL_DAMAGES,
}


# A run that passes every check of its folder, loads, and cannot answer (as a diverged run would be
# published): refused as the model loads (a probe input's scores must be finite), so by predict,
# evaluate and serve's worker, not by serve's parent.
def _overflowing_weights(model: Path) -> None:
    set_tensors(model / WEIGHTS, 1e30)  # finite, but nothing computed from them is
    republish(model)


LOAD_DAMAGES: dict[str, Callable[[Path], object]] = {"weights-overflowing": _overflowing_weights}
# Damages only the run's record of its files (run.json, src/fingerprints.py) can tell: the folder is fine otherwise.
NEEDS_THE_RECORD = {"weights-rewritten", *samples.NEEDS_THE_RECORD}


def damaged_model(run_dir: Path, target: Path, damage: str, record: bool = True) -> Path:
    """A copy of the run, damaged; without its `record` of its files, as a folder from elsewhere (each
    check of the folder itself must then refuse the damage)."""
    model = target / "model"
    shutil.copytree(run_dir, model)
    if not record:
        info = json.loads((model / "run.json").read_text())
        info.pop("files", None)
        (model / "run.json").write_text(json.dumps(info), encoding="utf-8")
    {**MODEL_DAMAGES, **LOAD_DAMAGES}[damage](model)
    return model


# How the newest checkpoint of an interrupted run can be damaged: resuming must skip it.
CHECKPOINT_DAMAGES: dict[str, Callable[[Path], object]] = {
    "truncated-weights": lambda checkpoint: truncate(checkpoint / WEIGHTS),
    "garbage-weights": lambda checkpoint: (checkpoint / WEIGHTS).write_bytes(os.urandom(4096)),
    "bad-json": lambda checkpoint: (checkpoint / "trainer_state.json").write_text("{not json"),
    "bad-optimizer": lambda checkpoint: (checkpoint / "optimizer.pt").write_bytes(b"\0" * 64),
    "bad-rng-state": lambda checkpoint: truncate(next(checkpoint.glob("rng_state*.pth"))),
    "missing-scheduler": lambda checkpoint: (checkpoint / "scheduler.pt").unlink(),
    "missing-config": lambda checkpoint: (checkpoint / CONFIG).unlink(),
    "empty-trainer-state": lambda checkpoint: (checkpoint / "trainer_state.json").write_text("{}"),
    # A valid torch archive, not this checkpoint's optimizer state: only the checkpoint's record tells.
    "optimizer-of-another-file": lambda checkpoint: shutil.copy(
        checkpoint / "scheduler.pt", checkpoint / "optimizer.pt"
    ),
}
