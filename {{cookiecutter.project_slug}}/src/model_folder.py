"""Check that a saved model folder can be loaded and serve correctly; no torch needed.

serve, serve-cloud, predict and evaluate check a folder with this before they use it. The
server runs it in its parent process (which LitServe forks into its API servers, so
torch and transformers must not be imported there): config.json must describe a sequence
classifier, the tokenizer must load, the weights must be complete (src/weights.py, the
check training's resume uses too), and the run's record must agree with the config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.errors import UserError
from src.runs import LATEST, RUN_INFO, ModelNotFoundError, finished_runs, resolve_model_dir
from src.weights import weights_problem

# Tokenizer files transformers can load: the fast tokenizer, or the files of a slow one.
SLOW_TOKENIZER_FILES = ("vocab.txt", "spiece.model", "sentencepiece.bpe.model", "vocab.json")


class BadModelFolderError(UserError):
    """The model folder cannot be loaded (to serve, predict or evaluate); the message names the file and the fix."""


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    labels: list[str]
    max_length: int  # tokens: where the run was trained to truncate


def _fail(path: Path, problem: str) -> BadModelFolderError:
    return BadModelFolderError(
        f"{path}: {problem}. The model folder is not a complete saved model: point --model-dir (or RUN) at "
        "what train-local publishes, or train a new one"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise _fail(path, f"not readable JSON ({error})") from None


def _check_config(model_dir: Path) -> dict[str, Any]:
    config = _read_json(model_dir / "config.json")
    path = model_dir / "config.json"
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise _fail(path, "no model_type: not a transformers model config")
    architectures = config.get("architectures") or []
    if not any(isinstance(name, str) and name.endswith("ForSequenceClassification") for name in architectures):
        raise _fail(path, f"not a sequence classifier (architectures: {architectures}): fine-tune it first")
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or len(id2label) < 2:
        raise _fail(path, "id2label must name two or more labels")
    try:
        keys = sorted(int(key) for key in id2label)
    except (TypeError, ValueError):
        raise _fail(path, "id2label keys must be the label indices 0, 1, ...") from None
    if keys != list(range(len(keys))) or not all(isinstance(value, str) for value in id2label.values()):
        raise _fail(path, "id2label must map 0, 1, ... to label names")
    return config


def _check_tokenizer(model_dir: Path, embeddings: object) -> int | None:
    """The tokenizer's own length limit, when it states one; its tokens must fit the embeddings."""
    fast = model_dir / "tokenizer.json"
    if fast.is_file():
        from tokenizers import Tokenizer  # Rust, light: no torch

        try:
            tokens = Tokenizer.from_file(str(fast)).get_vocab_size(with_added_tokens=True)
        except Exception as error:  # tokenizers raises bare Exceptions for malformed files
            raise _fail(fast, f"the tokenizer does not load ({str(error)[:200]})") from None
        if isinstance(embeddings, int) and tokens > embeddings:
            raise _fail(
                fast, f"{tokens} tokens, but config.json's vocab_size is {embeddings}: tokenizer and model do not match"
            )
    elif not any((model_dir / name).is_file() for name in SLOW_TOKENIZER_FILES):
        raise _fail(model_dir, "no tokenizer files (tokenizer.json, or vocab.txt and friends)")
    config_path = model_dir / "tokenizer_config.json"
    if not config_path.is_file():
        return None
    config = _read_json(config_path)
    limit = config.get("model_max_length") if isinstance(config, dict) else None
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None


def _check_weights(model_dir: Path) -> None:
    damaged = weights_problem(model_dir)
    if damaged:
        path, problem = damaged
        raise _fail(path, f"{problem}: the weights are damaged or missing")


def trained_max_length(run_info: dict[str, Any], tokenizer_limit: int | None, positions: int | None) -> int:
    """Where the run truncated when it trained (run.json), else the longest input the model takes."""
    recorded = run_info.get("max_length")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
        return recorded
    limits = [limit for limit in (tokenizer_limit, positions) if isinstance(limit, int) and limit > 0]
    return min(limits) if limits else 512


def inspect_model_folder(model_dir: Path) -> ModelFolder:
    """What serving needs to know about a model folder, or BadModelFolderError saying what is wrong."""
    if not model_dir.is_dir():
        raise _fail(model_dir, "not a folder")
    config = _check_config(model_dir)
    tokenizer_limit = _check_tokenizer(model_dir, config.get("vocab_size"))
    _check_weights(model_dir)
    labels = [config["id2label"][key] for key in sorted(config["id2label"], key=int)]
    info: dict[str, Any] = {}
    if (model_dir / RUN_INFO).is_file():
        info = _read_json(model_dir / RUN_INFO)
        if not isinstance(info, dict):
            raise _fail(model_dir / RUN_INFO, "not a JSON object")
        if "labels" in info and info["labels"] != labels:
            raise _fail(model_dir / RUN_INFO, f"labels {info['labels']} differ from config.json's {labels}")
    positions = config.get("max_position_embeddings")
    max_length = trained_max_length(info, tokenizer_limit, positions if isinstance(positions, int) else None)
    if isinstance(positions, int) and max_length > positions:
        raise _fail(model_dir / RUN_INFO, f"max_length {max_length} exceeds the model's {positions} positions")
    return ModelFolder(path=model_dir, labels=labels, max_length=max_length)


def model_to_serve(path: Path) -> Path:
    """The model folder, following `latest`; if that pointer is gone, the newest finished run beside it."""
    try:
        return resolve_model_dir(path)
    except ModelNotFoundError:
        newest = finished_runs(path.parent) if path.name == LATEST else []
        if not newest:
            raise
        return resolve_model_dir(newest[0])
