"""`uv run predict` and `evaluate`: the server's own classifier over many texts, on the best device, with a
progress bar.

`load` picks the runtime and precision as the server does (parity.choose): on CPU with
both on auto, ONNX Runtime int8 when its export agrees with PyTorch fp32, else the next that
does (ONNX Runtime fp32, then PyTorch), saying so; asked for explicitly, as asked or refused
with the server's own line; PyTorch on GPUs.

`predict` and `evaluate` both go through `classify`, which runs `Classifier.predict` (what the
server's worker runs) on chunks of the texts sorted by token count, the order the classifier
uses itself. A chunk is a whole number of the classifier's groups (`Classifier.groups`), so
every group holds the same texts as in one `Classifier.predict` call over the whole file: the
same numbers, also under int8, whose activation scales depend on the group. The price is
tokenizing twice (here for the groups, then in the classifier), about a fifth of the CPU
time. Imports torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from src.devices import best_device, cpu_cores
from src.tables import Table
from src.task.classifier import MICRO_BATCH, Classifier
from src.task.folder import ClassifierFolder
from src.task.runtimes import serving_runtime
from src.task.schemas import Prediction

# Texts per call: enough to keep the device busy, few enough for the progress bar to move.
CHUNK = 16 * MICRO_BATCH
ENCODE_CHUNK = 2048


def load(model_dir: Path, precision: str = "auto", device: str | None = None, runtime: str = "auto") -> Classifier:
    """The model as `uv run serve` would run it with this precision and runtime on `device`."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # "Loading weights", once per load
    device = device or best_device()
    if device != "cpu" or serving_runtime(runtime, precision, device) == "pytorch":
        return Classifier(model_dir, device, precision=precision)
    from src.task import parity

    threads = cpu_cores()
    choice = parity.choose(model_dir, runtime, precision, threads)
    for note in choice.notes:
        print(note, file=sys.stderr, flush=True)
    return Classifier(model_dir, device, precision=choice.precision, runtime=choice.runtime, threads=threads)


def classify(classifier: Classifier, texts: Sequence[str], description: str = "predict") -> list[Prediction]:
    """Predictions in the order of `texts`."""
    # disable=None: a bar on a terminal, nothing in logs and pipes.
    lengths: list[int] = []
    with tqdm(total=len(texts), desc="tokenize", unit="text", disable=None, dynamic_ncols=True) as bar:
        for start in range(0, len(texts), ENCODE_CHUNK):  # in pieces: Ctrl-C waits for one piece at most
            lengths += [len(ids) for ids in classifier.encode(texts[start : start + ENCODE_CHUNK])]
            bar.update(min(ENCODE_CHUNK, len(texts) - start))
    chunks: list[list[int]] = [[]]
    for group in classifier.groups(lengths):
        if len(chunks[-1]) >= CHUNK:
            chunks.append([])
        chunks[-1] += group
    results: list[Prediction | None] = [None] * len(texts)
    with tqdm(total=len(texts), desc=description, unit="text", disable=None, dynamic_ncols=True) as bar:
        for chunk in chunks:
            for index, prediction in zip(chunk, classifier.predict([texts[i] for i in chunk]), strict=True):
                results[index] = prediction
            bar.update(len(chunk))
    return [result for result in results if result is not None]


def predict_rows(
    folder: ClassifierFolder, serving: Any, args: argparse.Namespace, texts: Sequence[str], table: Table
) -> list[dict[str, Any]]:
    """Each row of `table` with its predicted label, score and one probability per label."""
    device = best_device()
    classifier = load(folder.path, serving.precision, device, serving.runtime)  # as the server runs it
    print(f"Classifying {len(texts)} texts from {table.source} with {folder.path} "
          f"({classifier.runtime} {classifier.precision} on {device})", file=sys.stderr, flush=True)  # fmt: skip
    return [
        {
            **row,
            "predicted_label": prediction.label,
            "predicted_score": prediction.score,
            **{f"probability_{label}": value for label, value in prediction.probabilities.items()},
        }
        for row, prediction in zip(table.rows, classify(classifier, texts), strict=True)
    ]
