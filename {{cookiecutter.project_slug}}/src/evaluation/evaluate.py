"""`uv run evaluate [RUN] [--model-dir DIR] [--data FILE]`: how good a run is and where it fails.

Loads a finished run (default: `latest`), classifies its evaluation split (the one in the
run's settings.yaml, same subset as training used) or `--data FILE` with the server's own
classifier, and writes beside the model: evaluation.json (accuracy, macro F1, per-class
precision/recall/F1/support, the confusion matrix), mistakes.csv (wrong predictions, most
confident first), the pictures (training curves, learning rate, confusion matrix) and
report.md embedding them. `--precision int8` measures the model as served on CPU (through
ONNX Runtime; `--runtime pytorch` for PyTorch's int8). `--data FILE` writes into
`<run>/eval-<file name>/` instead, so the run's own report stays. Training calls
`write_run_report` on every run it publishes.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from src import errors, flags, runs
from src.config import DataSettings, load_settings
from src.errors import UserError
from src.evaluation import metrics, report, tables
from src.flags import FULL_PRECISION  # the model as trained: comparable with metrics.json, whatever serves
from src.model_folder import inspect_model_folder
from src.runs import RUN_SETTINGS, read_json, section, stored_settings

EVALUATION = "evaluation.json"
MISTAKES = "mistakes.csv"


@dataclass(frozen=True)
class Examples:
    texts: list[str]
    labels: list[str]  # the true label of each text, by name
    description: str  # what they are, for the report


def run_data_settings(run_dir: Path) -> DataSettings:
    stored = stored_settings(run_dir).get("data")
    if stored is None:
        raise UserError(
            f"{run_dir} holds no {RUN_SETTINGS} with a data section (not a training run): "
            "pass --data FILE with text and label columns"
        )
    try:
        return DataSettings.model_validate(stored)
    except ValidationError as error:
        raise UserError(f"{run_dir / RUN_SETTINGS}: data section is invalid: {error}"[:500]) from None


def split_examples(data: DataSettings) -> Examples:
    """The evaluation split as training saw it: same file or Hub split, same subset."""
    from src.data import label_names, load_splits  # heavy (datasets), and only needed here
    from src.hub import offline_message

    # load_splits reads a train split too: point it at the evaluation one, and keep one row.
    if data.dataset is None:
        only_eval = data.model_copy(update={"train_file": data.eval_file, "max_train_samples": 1})
        where = f"the evaluation file {data.eval_file}"
    else:
        only_eval = data.model_copy(update={"train_split": data.eval_split, "max_train_samples": 1})
        where = f"the {data.eval_split!r} split of {data.dataset}"
    try:
        split = load_splits(only_eval)["eval"]
    except (ConnectionError, OSError) as error:
        if data.dataset is None:
            raise UserError(f"cannot read {data.eval_file}: {error}") from None
        raise UserError(offline_message([("dataset", data.dataset)])) from None
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
    from src.evaluation import inference  # torch: only once there is something to classify

    classifier = inference.load(model_dir, precision, runtime=runtime)
    names = classifier.labels
    unknown = sorted(set(examples.labels) - set(names))
    if unknown:
        raise UserError(f"{examples.description}: labels {unknown} are not the model's labels {names}")
    predictions = inference.classify(classifier, examples.texts, "evaluate")
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
    pictures = {}
    history = report.log_history(model_dir)
    if report.plot_curves(history, metric, target / report.CURVES):
        pictures["Training and evaluation curves"] = report.CURVES
    if report.plot_learning_rate(history, target / report.LEARNING_RATE):
        pictures["Learning rate"] = report.LEARNING_RATE
    report.plot_confusion(evaluation["confusion_matrix"], names, target / report.CONFUSION)
    pictures["Confusion matrix"] = report.CONFUSION
    title = f"Evaluation of {(published_as or model_dir).name}"
    text = report.markdown(title, evaluation, mistakes, pictures, training)
    with runs.atomic_path(target / report.REPORT) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return evaluation


def training_summary(run_dir: Path) -> dict[str, Any] | None:
    """A few facts about how the run was trained, for report.md (None for a bare model folder)."""
    trained = read_json(run_dir / runs.METRICS)
    if not trained:
        return None
    training = section(stored_settings(run_dir), "training")
    return {
        "base model": runs.read_info(run_dir).get("base_model"),
        "steps": trained.get("global_step"),
        "training examples": trained.get("train_samples"),
        "final training loss": trained.get("train_loss"),
        "learning rate": training.get("learning_rate"),
        "evaluated every": f"{training['eval_steps']} steps" if training.get("eval_steps") else None,
        "best checkpoint by": training.get("best_model_metric") if training.get("keep_best_model") else None,
        "training time (s)": trained.get("train_runtime_s"),
    }


def write_run_report(run_dir: Path, data: DataSettings, metric: str, published_as: Path) -> dict[str, Any]:
    """The report of a run on its own evaluation split, into its (staging) folder: training calls this."""
    return evaluate(run_dir, split_examples(data), run_dir, metric, training_summary(run_dir), published_as)


def _target_for(run_dir: Path, data_file: Path) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", data_file.name).strip("-.") or "data"
    return run_dir / f"eval-{name}"


def main(argv: Sequence[str] | None = None) -> int:
    args = flags.EVALUATE.parse(sys.argv[1:] if argv is None else argv)
    if args.run and args.model_dir:
        raise UserError("give a RUN or --model-dir, not both")
    if args.model_dir:
        model_dir = runs.resolve_model_dir(args.model_dir)
    else:
        output_dir = load_settings(flags=flags.EVALUATE.settings_flags(args)).training.output_dir
        model_dir = runs.find_run(output_dir, args.run)
    folder = inspect_model_folder(model_dir)  # before anything is read or written: a damaged run keeps its report
    stored = stored_settings(model_dir)
    metric = str(section(stored, "training").get("best_model_metric", "f1"))
    if args.data is None:
        data = run_data_settings(model_dir)
        if data.dataset is not None and "HF_HUB_OFFLINE" not in os.environ:
            from src.hub import hub_reachable

            if not hub_reachable():
                os.environ["HF_HUB_OFFLINE"] = "1"  # use the cached copy at once, not after a minute of retries
        examples = split_examples(data)
        target = model_dir
    else:
        columns = section(stored, "data")
        examples = file_examples(
            args.data,
            folder.labels,
            args.text_column or columns.get("text_column", "text"),
            args.label_column or columns.get("label_column", "label"),
        )
        target = _target_for(model_dir, args.data)
    evaluation = evaluate(
        model_dir, examples, target, metric, training_summary(model_dir), precision=args.precision, runtime=args.runtime
    )
    summary = {key: evaluation[key] for key in ("accuracy", "macro_f1", "count", "mistakes")}
    print(json.dumps({"run": model_dir.name, **summary, "report": str(target / report.REPORT)}, indent=2))
    return 0


if __name__ == "__main__":
    errors.run(main)
