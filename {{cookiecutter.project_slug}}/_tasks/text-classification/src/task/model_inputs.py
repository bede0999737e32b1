"""How texts become a classifier's token ids, and what its outputs mean.

From the run folder through transformers (`from_run`: what training used, and what PyTorch
serving runs), or from the copy the ONNX export carries in its own metadata (`from_export`):
the same tokenizers pipeline transformers calls, run by the `tokenizers` library directly, so
an ONNX Runtime worker imports neither torch nor transformers (6-7 s of every start on a
2-core machine, against 0.2 s). The copy is made from `from_run`'s tokenizer when the export
is written (`describe`), and transformers' own truncation is applied to it (`encode`); parity.py
then checks the export, this tokenization included, against PyTorch on the run's texts.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METADATA_KEY = "serving_inputs"  # the ONNX model's metadata entry that holds `describe`'s JSON


@dataclass(frozen=True)
class Inputs:
    labels: list[str]
    pad_id: int
    model_max_length: int | None  # the tokenizer's limit
    positions: int | None  # the model's (max_position_embeddings)
    encode: Callable[[Sequence[str], int], list[list[int]]]  # texts, max_length -> token ids, cut at max_length


def _loaded(model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir), AutoConfig.from_pretrained(model_dir)


def _labels(config: Any) -> list[str]:
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def from_run(model_dir: Path) -> Inputs:
    tokenizer, config = _loaded(model_dir)

    def encode(texts: Sequence[str], max_length: int) -> list[list[int]]:
        ids: list[list[int]] = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        return ids

    positions = getattr(config, "max_position_embeddings", None)
    return Inputs(_labels(config), tokenizer.pad_token_id or 0, tokenizer.model_max_length, positions, encode)


def describe(model_dir: Path) -> str | None:
    """`from_run` as JSON for the export's metadata; None when the tokenizer has no tokenizers pipeline."""
    tokenizer, config = _loaded(model_dir)
    pipeline = getattr(tokenizer, "backend_tokenizer", None)
    if pipeline is None:
        return None
    return json.dumps({
        "labels": _labels(config),
        "pad_id": tokenizer.pad_token_id or 0,
        "model_max_length": tokenizer.model_max_length,
        "positions": getattr(config, "max_position_embeddings", None),
        "truncation_side": tokenizer.truncation_side,
        "split_special_tokens": bool(getattr(tokenizer, "split_special_tokens", False)),
        "tokenizer": pipeline.to_str(),
    })  # fmt: skip


def from_export(metadata: str) -> Inputs:
    """`describe`'s JSON back as Inputs, tokenizing as transformers' fast tokenizers do (no padding,
    truncation "longest_first" at max_length on the tokenizer's side, special tokens added)."""
    from tokenizers import Tokenizer

    data = json.loads(metadata)
    pipeline = Tokenizer.from_str(data["tokenizer"])
    pipeline.no_padding()
    pipeline.encode_special_tokens = bool(data["split_special_tokens"])
    lock, side = threading.Lock(), data["truncation_side"]  # enable_truncation changes the pipeline

    def encode(texts: Sequence[str], max_length: int) -> list[list[int]]:
        with lock:
            pipeline.enable_truncation(max_length, stride=0, strategy="longest_first", direction=side)
            return [encoding.ids for encoding in pipeline.encode_batch(list(texts), add_special_tokens=True)]

    limit, positions = data["model_max_length"], data["positions"]
    return Inputs(list(data["labels"]), int(data["pad_id"]), limit, positions, encode)
