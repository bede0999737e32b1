"""Smoke settings for a test's own folder, and the ways a model folder or a checkpoint gets damaged."""

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

from src.config import DEFAULT_SETTINGS_FILE, SMOKE_SETTINGS_FILE, Settings, load_settings
from src.models import smoke
from src.weights import ADAPTER_CONFIG, ADAPTER_WEIGHTS


def smoke_settings(assets: dict[str, Path], output_dir: Path, environ: dict[str, str] | None = None,
                   **training: Any) -> Settings:  # fmt: skip
    """configs/smoke.yaml writing under output_dir; keywords override training.*, `environ` plays the shell."""
    overrides = smoke.overrides(assets)
    overrides["training"] = {"output_dir": str(output_dir), **training}
    return load_settings(DEFAULT_SETTINGS_FILE, environ=environ or {}, overlays=[SMOKE_SETTINGS_FILE],
                         overrides=overrides)  # fmt: skip


@functools.cache
def _launcher_assets() -> Path:
    """What `train-local --smoke` builds before it trains (with its seed), built once per test run."""
    target = Path(tempfile.mkdtemp(prefix="smoke-assets-")) / "assets"
    atexit.register(shutil.rmtree, target.parent, True)
    smoke.build(target, seed=smoke_file_settings().training.seed)
    return target


def with_smoke_assets(output_dir: Path) -> Path:
    """A runs folder that already holds the smoke assets the launcher would build (it keeps a complete set).

    Each launch then skips seconds of importing torch to build them; one test builds them itself.
    """
    if not smoke.assets_dir(output_dir).exists():
        shutil.copytree(_launcher_assets(), smoke.assets_dir(output_dir))
    return output_dir


def smoke_file_settings() -> Settings:
    """What configs/smoke.yaml says, for the numbers tests expect (steps, batch size, intervals)."""
    return load_settings(DEFAULT_SETTINGS_FILE, environ={}, overlays=[SMOKE_SETTINGS_FILE])


def copy_run(run_dir: Path, target: Path) -> Path:
    """A copy of a published run, for a test that writes into it or damages it."""
    copied = target / run_dir.name
    shutil.copytree(run_dir, copied, symlinks=True)
    return copied


def truncate(path: Path, size: int = 100) -> None:
    with path.open("r+b") as handle:
        handle.truncate(size)


def _set_adapter_config(model: Path, **values: Any) -> None:
    config = json.loads((model / ADAPTER_CONFIG).read_text())
    (model / ADAPTER_CONFIG).write_text(json.dumps({**config, **values}), encoding="utf-8")


def _remove_tokenizer(model: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)


def _remove_chat_template(model: Path) -> None:
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def _replace_with_a_file(model: Path) -> None:
    shutil.rmtree(model)
    model.write_text("not a folder", encoding="utf-8")


def _base_model_gone(model: Path) -> None:
    info = json.loads((model / "run.json").read_text())
    (model / "run.json").write_text(json.dumps({**info, "base_model": str(model / "no-such-base")}), encoding="utf-8")


# How a published run can be unfit to serve: each must be refused before serving.
MODEL_DAMAGES: dict[str, Callable[[Path], object]] = {
    "no-tokenizer": _remove_tokenizer,
    "no-chat-template": _remove_chat_template,
    "truncated-adapter": lambda model: truncate(model / ADAPTER_WEIGHTS, (model / ADAPTER_WEIGHTS).stat().st_size // 2),
    "tiny-adapter": lambda model: truncate(model / ADAPTER_WEIGHTS),  # what `truncate -s 100` does
    "garbage-adapter": lambda model: (model / ADAPTER_WEIGHTS).write_bytes(
        os.urandom((model / ADAPTER_WEIGHTS).stat().st_size)
    ),
    "no-adapter-weights": lambda model: (model / ADAPTER_WEIGHTS).unlink(),
    "adapter-config-not-json": lambda model: (model / ADAPTER_CONFIG).write_text("{ not json", encoding="utf-8"),
    "not-lora": lambda model: _set_adapter_config(model, peft_type="PREFIX_TUNING"),
    "bad-tokenizer": lambda model: (model / "tokenizer.json").write_text('{"version": "1.0", "model": 42}'),
    "base-model-gone": _base_model_gone,
    "a-file": _replace_with_a_file,
}


def damaged_model(run_dir: Path, target: Path, damage: str) -> Path:
    model = target / "model"
    shutil.copytree(run_dir, model)
    MODEL_DAMAGES[damage](model)
    return model


# How the newest checkpoint of an interrupted run can be damaged: resuming must skip it.
CHECKPOINT_DAMAGES: dict[str, Callable[[Path], object]] = {
    "truncated-adapter": lambda checkpoint: truncate(checkpoint / ADAPTER_WEIGHTS),
    "garbage-adapter": lambda checkpoint: (checkpoint / ADAPTER_WEIGHTS).write_bytes(os.urandom(4096)),
    "bad-json": lambda checkpoint: (checkpoint / "trainer_state.json").write_text("{not json"),
    "bad-optimizer": lambda checkpoint: (checkpoint / "optimizer.pt").write_bytes(b"\0" * 64),
    "bad-rng-state": lambda checkpoint: truncate(next(checkpoint.glob("rng_state*.pth"))),
    "missing-scheduler": lambda checkpoint: (checkpoint / "scheduler.pt").unlink(),
    "missing-adapter-config": lambda checkpoint: (checkpoint / ADAPTER_CONFIG).unlink(),
}
