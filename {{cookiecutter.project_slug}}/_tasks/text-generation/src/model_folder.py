"""Check that a published run (LoRA adapters on a base model) can be loaded and serve; no torch needed.

serve, serve-cloud, predict and evaluate check a folder with this before they use it. The
server runs it in its parent process (which LitServe forks into its API servers, so torch
and transformers must not be imported there): adapter_config.json must describe LoRA
adapters, their weights must be complete (src/weights.py, the check training's resume uses
too), the tokenizer must load and carry a chat template, and a base model given as a local
folder must still be there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.errors import UserError
from src.runs import LATEST, RUN_INFO, ModelNotFoundError, finished_runs, resolve_model_dir
from src.weights import ADAPTER_CONFIG, ADAPTER_WEIGHTS, weights_problem

CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers 5 saves a tokenizer's chat template


class BadModelFolderError(UserError):
    """The model folder cannot be loaded (to serve, predict or evaluate); the message names the file and the fix."""


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    base_model: str  # a Hub id or a local folder: the model the adapters were trained on
    max_length: int  # tokens: where the run truncated its conversations


def _fail(path: Path, problem: str) -> BadModelFolderError:
    return BadModelFolderError(
        f"{path}: {problem}. The model folder is not a complete trained run: point --model-dir (or RUN) at "
        "what train-local publishes, or train a new one"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise _fail(path, f"not readable JSON ({error})") from None


def _check_adapter(model_dir: Path) -> dict[str, Any]:
    path = model_dir / ADAPTER_CONFIG
    if not path.is_file():
        raise _fail(path, "missing: this folder holds no LoRA adapters")
    config = _read_json(path)
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise _fail(
            path,
            f"not a LoRA adapter config (peft_type {config.get('peft_type') if isinstance(config, dict) else None!r})",
        )
    if not isinstance(config.get("base_model_name_or_path"), str) or not config["base_model_name_or_path"]:
        raise _fail(path, "names no base model (base_model_name_or_path)")
    damaged = weights_problem(model_dir)
    if damaged or not (model_dir / ADAPTER_WEIGHTS).is_file():
        where, problem = damaged or (model_dir / ADAPTER_WEIGHTS, "missing")
        raise _fail(where, f"{problem}: the adapter weights are damaged or missing")
    return config


def _check_tokenizer(model_dir: Path) -> int | None:
    """The tokenizer must load and have a chat template; returns its own length limit, when it states one."""
    fast = model_dir / "tokenizer.json"
    if not fast.is_file():
        raise _fail(model_dir, "no tokenizer.json (the run saves its tokenizer beside the adapters)")
    from tokenizers import Tokenizer  # Rust, light: no torch

    try:
        Tokenizer.from_file(str(fast))
    except Exception as error:  # tokenizers raises bare Exceptions for malformed files
        raise _fail(fast, f"the tokenizer does not load ({str(error)[:200]})") from None
    config_path = model_dir / "tokenizer_config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    if not isinstance(config, dict):
        raise _fail(config_path, "not a JSON object")
    if not config.get("chat_template") and not (model_dir / CHAT_TEMPLATE_FILE).is_file():
        raise _fail(model_dir, f"the tokenizer has no chat template ({CHAT_TEMPLATE_FILE}): chats cannot be formatted")
    limit = config.get("model_max_length")
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None


def _check_base(base: str, model_dir: Path) -> None:
    if base.startswith(("/", "./", "../", "~")):
        folder = Path(base).expanduser()
        if not (folder / "config.json").is_file():
            raise _fail(model_dir / RUN_INFO, f"its base model {folder} is gone (no config.json there)")


def inspect_model_folder(model_dir: Path) -> ModelFolder:
    """What serving needs to know about a run folder, or BadModelFolderError saying what is wrong."""
    if not model_dir.is_dir():
        raise _fail(model_dir, "not a folder")
    adapter = _check_adapter(model_dir)
    tokenizer_limit = _check_tokenizer(model_dir)
    info: dict[str, Any] = {}
    if (model_dir / RUN_INFO).is_file():
        info = _read_json(model_dir / RUN_INFO)
        if not isinstance(info, dict):
            raise _fail(model_dir / RUN_INFO, "not a JSON object")
    base = str(info["base_model"] if isinstance(info.get("base_model"), str) else adapter["base_model_name_or_path"])
    _check_base(base, model_dir)
    recorded = info.get("max_length")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
        max_length = recorded
    else:
        max_length = tokenizer_limit or 2048
    return ModelFolder(path=model_dir, base_model=base, max_length=max_length)


def model_to_serve(path: Path) -> Path:
    """The model folder, following `latest`; if that pointer is gone, the newest finished run beside it."""
    try:
        return resolve_model_dir(path)
    except ModelNotFoundError:
        newest = finished_runs(path.parent) if path.name == LATEST else []
        if not newest:
            raise
        return resolve_model_dir(newest[0])
