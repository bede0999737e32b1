"""In-process batched inference on a saved model: what the server runs in its worker."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from src.deployment.schemas import Prediction

# Texts are sorted by length and run in groups this size, so each group pads only to
# its own longest text.
MICRO_BATCH = 16


class Classifier:
    """A saved model and tokenizer; `predict` takes any number of texts."""

    def __init__(self, model_dir: Path, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(self.device).eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.max_length = min(self.tokenizer.model_max_length, self.model.config.max_position_embeddings)

    @torch.inference_mode()
    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        results: list[Prediction | None] = [None] * len(texts)
        for start in range(0, len(order), MICRO_BATCH):
            chunk = order[start : start + MICRO_BATCH]
            encoded = self.tokenizer(
                [texts[index] for index in chunk],
                truncation=True, max_length=self.max_length, padding=True, return_tensors="pt",
            ).to(self.device)  # fmt: skip
            probabilities = self.model(**encoded).logits.float().softmax(dim=-1).cpu()
            for index, row in zip(chunk, probabilities.tolist(), strict=True):
                best = max(range(len(row)), key=row.__getitem__)
                results[index] = Prediction(
                    label=self.labels[best],
                    score=row[best],
                    probabilities=dict(zip(self.labels, row, strict=True)),
                )
        return [result for result in results if result is not None]
