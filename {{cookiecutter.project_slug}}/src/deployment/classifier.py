"""In-process batched inference on a saved model: what the server runs in its worker.

Inputs are truncated where the run was trained (run.json's max_length), so serving feeds
the model what it saw in training and never pays for more. Texts are tokenized once,
sorted by token count and run in micro-batches padded only to their own longest text.
The precision follows the device (src/devices.py: int8 on CPU, half precision on GPUs).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from src.deployment.schemas import Prediction
from src.devices import serving_precision
from src.model_folder import trained_max_length
from src.runs import read_info

MICRO_BATCH = 16
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """int8 weights for every Linear layer, activations quantized on the fly (CPU)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch deprecates torch.ao.quantization in favour of torchao, which is not a
        # dependency here; the dynamic int8 kernels are still the fastest CPU path it ships.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    return cast(torch.nn.Module, quantized)


class Classifier:
    """A saved model and tokenizer; `predict` takes any number of texts."""

    def __init__(self, model_dir: Path, device: str | torch.device = "cpu", precision: str = "auto") -> None:
        self.device = torch.device(device)
        self.precision = serving_precision(precision, self.device.type)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=DTYPES[self.precision])
        model = model.to(self.device).eval()
        self.model = quantize_int8(model) if self.precision == "int8" else model
        config = model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        self.max_length = trained_max_length(
            read_info(Path(model_dir)), self.tokenizer.model_max_length, config.max_position_embeddings
        )
        self.pad_id = self.tokenizer.pad_token_id or 0

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, cut at the trained max_length."""
        ids: list[list[int]] = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        return ids

    def _padded(self, rows: list[list[int]]) -> dict[str, Any]:
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            input_ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[index, : len(row)] = 1
        return {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}

    @torch.inference_mode()
    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        encoded = self.encode(texts)
        order = sorted(range(len(texts)), key=lambda index: len(encoded[index]))
        results: list[Prediction | None] = [None] * len(texts)
        for start in range(0, len(order), MICRO_BATCH):
            chunk = order[start : start + MICRO_BATCH]
            logits = self.model(**self._padded([encoded[index] for index in chunk])).logits
            probabilities = logits.float().softmax(dim=-1).cpu()
            for index, row in zip(chunk, probabilities.tolist(), strict=True):
                best = max(range(len(row)), key=row.__getitem__)
                results[index] = Prediction(
                    label=self.labels[best],
                    score=row[best],
                    probabilities=dict(zip(self.labels, row, strict=True)),
                )
        return [result for result in results if result is not None]
