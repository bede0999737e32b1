"""What the shared tests need of this task: input rows, and the ways its model folder gets damaged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.files import set_json

WORDS = ["great", "awful", "moving", "dull", "the", "film", "was", "really", "brilliant", "tedious", "plot", "cast"]
MADE_BY_SERVING = ("onnx",)  # what serve, predict and evaluate write into a run folder (the ONNX exports)


def reviews(count: int, repeat: int = 1) -> list[str]:
    """Texts of varied length (so length-sorted batching reorders them), deterministic."""
    return [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(3 + i % 40)) * repeat for i in range(count)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": index, "text": text}) + "\n" for index, text in enumerate(texts)))
    return path


INPUT_COLUMN = "text"  # what predict reads of a row


def rows(count: int) -> list[dict[str, Any]]:
    """Rows of a predict input file: an id and a review each."""
    return [{"id": str(index), INPUT_COLUMN: text} for index, text in enumerate(reviews(count))]


def write_rows(path: Path, count: int) -> Path:
    """A .jsonl predict input of `count` rows."""
    return write_jsonl(path, reviews(count))


# How a classifier's folder can be unfit to serve, besides what every model can suffer (tests/helpers/models.py).
MODEL_DAMAGES: dict[str, Callable[[Path], object]] = {
    "config-not-a-classifier": lambda model: set_json(model / "config.json", architectures=["DistilBertModel"]),
    "tokenizer-of-another-model": lambda model: set_json(model / "config.json", vocab_size=32),
}
NEEDS_THE_RECORD: set[str] = set()  # each one of these the folder's own checks refuse

# serve's flags for answers equal to the in-process classifier's (int8's scales follow the batch).
EXACT_SERVING = ("--precision", "fp32")
# What serve's parent imports of the task (the API class's module), and what its worker imports.
SERVER_MODULE = "src.task.api"
WORKER_MODULES = ("src.task.api", "src.task.classifier")
BAD_DATA_SETTING = ("DATA__LABEL_COLUMN", "sentiment")  # a column the smoke data does not have


def check_two_process_run(run_dir: Path, eval_file: Path, metrics: dict[str, Any]) -> None:
    """A run trained on 2 processes learned, and its eval_loss is the mean over the split as one process
    computes it for the same model (the ranks' losses averaged, not summed)."""
    import math

    from src.task.classifier import Classifier

    predictions = Classifier(run_dir).predict(["great wonderful superb film", "awful boring dull mess"])
    assert [prediction.label for prediction in predictions] == ["pos", "neg"]
    examples = [json.loads(line) for line in eval_file.read_text().splitlines()]
    answers = Classifier(run_dir, precision="fp32").predict([example["text"] for example in examples])
    labels = json.loads((run_dir / "config.json").read_text())["id2label"]
    cross_entropy = -sum(
        math.log(answer.probabilities[labels[str(example["label"])]])
        for example, answer in zip(examples, answers, strict=True)
    ) / len(examples)
    assert abs(metrics["eval_loss"] - cross_entropy) <= 0.02 * cross_entropy, (metrics["eval_loss"], cross_entropy)


PREDICT_STARTED = "Classifying"  # predict's line once the model is loaded and the batches begin


def write_a_minute_of_work(path: Path) -> Path:
    """A predict input that keeps it busy for about a minute on a laptop CPU."""
    return write_jsonl(path, reviews(300, repeat=3) * 100)


def check_notebook(cells: dict[str, tuple[str, set[str]]]) -> None:
    """notebooks/starter.ipynb's own cells, by id: (printed text, kinds of rich output)."""
    classified, _ = cells["classify"]
    predicted = [line.split()[0] for line in classified.strip().splitlines()]
    assert len(predicted) == 3
    assert set(predicted) == {"neg", "pos"}  # its clearly positive and clearly negative review
