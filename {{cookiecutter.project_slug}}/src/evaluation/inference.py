"""Batched prediction with the server's own classifier, on the best device, with a progress bar.

`predict` and `evaluate` both go through `classify`, which runs `Classifier.predict` (what the
server's worker runs) on length-sorted chunks, so a file's predictions equal the server's for
the same texts while the progress bar moves. Imports torch: not for the light commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from src.deployment.classifier import Classifier
from src.deployment.schemas import Prediction

# Texts per call to Classifier.predict (it splits them into micro-batches itself): big enough
# to keep the device busy, small enough for the progress bar to move.
CHUNK = 256


def best_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load(model_dir: Path, device: str | None = None) -> Classifier:
    return Classifier(model_dir, device or best_device())


def classify(classifier: Classifier, texts: Sequence[str], description: str = "predict") -> list[Prediction]:
    """Predictions in the order of `texts`; chunks of similar length pad little."""
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    results: list[Prediction | None] = [None] * len(texts)
    # disable=None: a bar on a terminal, nothing in logs and pipes.
    with tqdm(total=len(texts), desc=description, unit="text", disable=None, dynamic_ncols=True) as bar:
        for start in range(0, len(order), CHUNK):
            chunk = order[start : start + CHUNK]
            for index, prediction in zip(chunk, classifier.predict([texts[i] for i in chunk]), strict=True):
                results[index] = prediction
            bar.update(len(chunk))
    return [result for result in results if result is not None]
