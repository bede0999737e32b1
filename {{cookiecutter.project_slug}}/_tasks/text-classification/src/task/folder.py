"""The start-up check of a classifier's model folder (serve, serve-cloud, predict, evaluate); no torch.

config.json must describe a sequence classifier with its labels, the tokenizer must load and
fit the embeddings, the weights must be complete (src/weights.py, the check training's resume
uses too), and the run's record must agree with the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.model_folder import (
    check_weights,
    fail,
    read_json,
    run_info,
    tokenizer_limit,
    tokenizer_size,
    trained_max_length,
)
from src.weights import SAVED_MODEL

# Tokenizer files transformers can load besides tokenizer.json: a slow tokenizer's.
SLOW_TOKENIZER_FILES = ("vocab.txt", "spiece.model", "sentencepiece.bpe.model", "vocab.json")


@dataclass(frozen=True)
class ClassifierFolder:
    path: Path
    labels: list[str]
    max_length: int  # tokens: where the run was trained to truncate


def _labels(config_path: Path) -> tuple[dict[str, Any], list[str]]:
    config = read_json(config_path)
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise fail(config_path, "no model_type: not a transformers model config")
    architectures = config.get("architectures") or []
    if not any(isinstance(name, str) and name.endswith("ForSequenceClassification") for name in architectures):
        raise fail(config_path, f"not a sequence classifier (architectures: {architectures}): fine-tune it first")
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or len(id2label) < 2:
        raise fail(config_path, "id2label must name two or more labels")
    try:
        keys = sorted(int(key) for key in id2label)
    except (TypeError, ValueError):
        raise fail(config_path, "id2label keys must be the label indices 0, 1, ...") from None
    if keys != list(range(len(keys))) or not all(isinstance(value, str) for value in id2label.values()):
        raise fail(config_path, "id2label must map 0, 1, ... to label names")
    return config, [id2label[key] for key in sorted(id2label, key=int)]


def _check_tokenizer(model_dir: Path, embeddings: object) -> None:
    """A tokenizer that loads (tokenizer.json, or a slow tokenizer's files), whose tokens fit the embeddings."""
    if not (model_dir / "tokenizer.json").is_file():
        if not any((model_dir / name).is_file() for name in SLOW_TOKENIZER_FILES):
            raise fail(model_dir, "no tokenizer files (tokenizer.json, or vocab.txt and friends)")
        return
    tokens = tokenizer_size(model_dir)
    if isinstance(embeddings, int) and tokens > embeddings:
        raise fail(
            model_dir / "tokenizer.json",
            f"{tokens} tokens, but config.json's vocab_size is {embeddings}: tokenizer and model do not match",
        )


def inspect(model_dir: Path) -> ClassifierFolder:
    """What serving needs to know about a model folder, or BadModelFolderError saying what is wrong."""
    if not model_dir.is_dir():
        raise fail(model_dir, "not a folder")
    config, labels = _labels(model_dir / SAVED_MODEL.config)
    _check_tokenizer(model_dir, config.get("vocab_size"))
    check_weights(model_dir, SAVED_MODEL)
    info = run_info(model_dir)
    if "labels" in info and info["labels"] != labels:
        raise fail(model_dir / "run.json", f"labels {info['labels']} differ from config.json's {labels}")
    positions = config.get("max_position_embeddings")
    positions = positions if isinstance(positions, int) else None
    max_length = trained_max_length(info, tokenizer_limit(model_dir), positions)
    if positions is not None and max_length > positions:
        raise fail(model_dir / "run.json", f"max_length {max_length} exceeds the model's {positions} positions")
    return ClassifierFolder(path=model_dir, labels=labels, max_length=max_length)


def describe(folder: ClassifierFolder) -> str:
    return f"labels {', '.join(folder.labels)}; truncating at {folder.max_length} tokens"
