"""A classifier's evaluation: how good a run is and where it fails (`uv run evaluate`, and every run's report).

Classifies the run's evaluation split (the one in its settings.yaml, the same subset training
used) or `--data FILE` with the server's own classifier, and writes: evaluation.json (accuracy,
macro F1, per-class precision/recall/F1/support, the confusion matrix), mistakes.csv (wrong
predictions, most confident first), the pictures (training curves, learning rate, confusion
matrix) and report.md embedding them (report_card.py). `--precision int8` measures the model
as served on CPU (through ONNX Runtime; `--runtime pytorch` for PyTorch's int8). Training
calls `write_run_report` on every run it publishes.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src import runs, tables
from src.config import DataSettings
from src.errors import UserError
from src.evaluation import report
from src.evaluation.evaluate import offline_unless_reachable, run_data
from src.evaluation.report import EVALUATION
from src.runs import read_json, section, stored_settings
from src.task import metrics
from src.task.folder import ClassifierFolder
from src.task.report_card import CONFUSION, markdown, plot_confusion

MISTAKES = "mistakes.csv"
FULL_PRECISION = "fp32"  # the model as trained: comparable with metrics.json, whatever serves


@dataclass(frozen=True)
class Examples:
    texts: list[str]
    labels: list[str]  # the true label of each text, by name
    description: str  # what they are, for the report


def split_examples(data: DataSettings) -> Examples:
    """The evaluation split as training saw it: same file or Hub split, same subset."""
    from src.hub import reading
    from src.task.data import label_names, load_splits  # heavy (datasets), and only needed here

    # load_splits reads a train split too: point it at the evaluation one, and keep one row.
    if data.dataset is None:
        only_eval = data.model_copy(update={"train_file": data.eval_file, "max_train_samples": 1})
        where = f"the evaluation file {data.eval_file}"
    else:
        only_eval = data.model_copy(update={"train_split": data.eval_split, "max_train_samples": 1})
        where = f"the {data.eval_split!r} split of {data.dataset}"
    with reading(data):
        split = load_splits(only_eval)["eval"]
    names = label_names(split, data)
    labels = [names[value] if isinstance(value, int) else str(value) for value in split[data.label_column]]
    if data.max_eval_samples is not None:
        where += f" (its first {data.max_eval_samples} shuffled examples, as in training)"
    return Examples(list(split[data.text_column]), labels, where)


def file_examples(path: Path, labels: Sequence[str], text_column: str, label_column: str) -> Examples:
    """Texts and labels from a .jsonl/.json/.csv/.parquet file; labels as names or 0-based numbers."""
    table = tables.read_table(str(path), "--data")
    if table.kind == "text":
        raise UserError(f"--data {path}: plain text has no labels: use .jsonl, .json, .csv or .parquet")
    texts = tables.texts(table, text_column)
    if table.kind in {"csv", "parquet"} and label_column not in table.columns:
        raise UserError(f"--data {path}: no column {label_column!r} (it has {table.columns}): pass --label-column NAME")
    found = []
    for row, place in zip(table.rows, table.places, strict=True):
        value = row.get(label_column)
        if isinstance(value, str) and value in labels:
            found.append(value)
        elif isinstance(value, int | str) and str(value).strip().isdigit() and int(value) < len(labels):
            found.append(labels[int(value)])
        else:
            raise UserError(
                f"--data {path} {place}: label {value!r} in {label_column!r} is none of the model's labels "
                f"{list(labels)} (or 0-{len(labels) - 1})"
            )
    return Examples(texts, found, f"{path}")


def evaluate(
    model_dir: Path,
    examples: Examples,
    target: Path,
    metric: str = "f1",
    training: Mapping[str, Any] | None = None,
    published_as: Path | None = None,
    precision: str = FULL_PRECISION,
    runtime: str = "auto",
) -> dict[str, Any]:
    """Classify `examples` with the model and write evaluation.json, mistakes.csv, pictures, report.md.

    `published_as`: where the model will be once published (it is evaluated in its staging folder).
    `precision`: fp32 measures the model as trained (what metrics.json has); `auto` as served.
    `runtime`: auto runs it as the server would (on CPU, int8 through ONNX Runtime).
    """
    from src.task import labelling  # torch: only once there is something to classify

    classifier = labelling.load(model_dir, precision, runtime=runtime)
    names = classifier.labels
    unknown = sorted(set(examples.labels) - set(names))
    if unknown:
        raise UserError(f"{examples.description}: labels {unknown} are not the model's labels {names}")
    predictions = labelling.classify(classifier, examples.texts, "evaluate")
    truth = [names.index(label) for label in examples.labels]
    predicted = [names.index(prediction.label) for prediction in predictions]
    wrong = [
        (prediction.score, {"true_label": true, "predicted_label": prediction.label, "score": prediction.score,
                            "text": text})
        for text, true, prediction in zip(examples.texts, examples.labels, predictions, strict=True)
        if prediction.label != true
    ]  # fmt: skip
    mistakes = [mistake for _, mistake in sorted(wrong, key=lambda pair: -pair[0])]
    evaluation = {
        "model_dir": str(published_as or model_dir),
        "data": examples.description,
        "evaluated_at": runs.timestamp(runs.now_utc()),
        "precision": classifier.precision,
        "runtime": classifier.runtime,
        "device": str(classifier.device),
        **metrics.classification_report(truth, predicted, names),
        "mistakes": len(mistakes),
        "worst_mistakes": mistakes[: report.WORST_SHOWN],
    }
    target.mkdir(parents=True, exist_ok=True)
    runs.write_json(target / EVALUATION, evaluation)
    tables.write_table(mistakes, target / MISTAKES, "csv")
    pictures = report.plot_training(report.log_history(model_dir), target, metric)
    plot_confusion(evaluation["confusion_matrix"], names, target / CONFUSION)
    pictures["Confusion matrix"] = CONFUSION
    title = f"Evaluation of {(published_as or model_dir).name}"
    runs.write_text(target / report.REPORT, markdown(title, evaluation, mistakes, pictures, training))
    return evaluation


def training_summary(run_dir: Path) -> dict[str, Any] | None:
    """A few facts about how the run was trained, for report.md (None for a bare model folder)."""
    trained = read_json(run_dir / runs.METRICS)
    if not trained:
        return None
    training = section(stored_settings(run_dir), "training")
    return {
        **report.training_facts(run_dir, trained, training),
        "training examples": trained.get("train_samples"),
        "best checkpoint by": training.get("best_model_metric") if training.get("keep_best_model") else None,
    }


def write_run_report(run_dir: Path, data: DataSettings, metric: str, published_as: Path) -> dict[str, Any]:
    """The report of a run on its own evaluation split, into its (staging) folder: training calls this."""
    return evaluate(run_dir, split_examples(data), run_dir, metric, training_summary(run_dir), published_as)


def evaluate_run(folder: ClassifierFolder, args: argparse.Namespace, target: Path) -> dict[str, Any]:
    """`uv run evaluate`: the run's split (its own report) or --data FILE (a report in `target`); the summary."""
    stored = stored_settings(folder.path)
    metric = str(section(stored, "training").get("best_model_metric", "f1"))
    if args.data is None:
        data = run_data(folder.path, DataSettings)
        offline_unless_reachable(data.dataset)
        examples = split_examples(data)
    else:
        columns = section(stored, "data")
        text_column = args.text_column or columns.get("text_column", "text")
        label_column = args.label_column or columns.get("label_column", "label")
        examples = file_examples(args.data, folder.labels, text_column, label_column)
    evaluation = evaluate(folder.path, examples, target, metric, training_summary(folder.path),
                          precision=args.precision, runtime=args.runtime)  # fmt: skip
    return {key: evaluation[key] for key in ("accuracy", "macro_f1", "count", "mistakes")}
