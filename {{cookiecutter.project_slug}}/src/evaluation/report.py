"""The pictures and report.md of an evaluation, drawn headless with matplotlib.

Figures are built with `matplotlib.figure.Figure` and its Agg canvas, never pyplot: no
display, no global state, the same pixels on a laptop and on a cluster. Each file is
written to a temporary name and renamed, so a reader never sees half a picture.
Training curves come from the Trainer's log history (`trainer_state.json` in the run).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from src.runs import TRAINER_STATE, atomic_path

CURVES = "training_curves.png"
LEARNING_RATE = "learning_rate.png"
CONFUSION = "confusion_matrix.png"
REPORT = "report.md"
DPI = 100
CURVES_INCHES = (12.0, 4.5)
LEARNING_RATE_INCHES = (6.0, 4.0)
WORST_SHOWN = 10  # mistakes in report.md; mistakes.csv has them all
METRIC_NAMES = {"f1": "macro F1", "accuracy": "accuracy"}


def confusion_inches(num_labels: int) -> tuple[float, float]:
    side = max(5.0, 0.6 * num_labels + 2.0)  # cells stay readable with many labels
    return side + 1.0, side


def log_history(run_dir: Path) -> list[dict[str, Any]]:
    """The Trainer's log entries (train loss, learning rate, evaluations), or [] without them."""
    try:
        state = json.loads((run_dir / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    history = state.get("log_history") if isinstance(state, dict) else None
    return [entry for entry in history or [] if isinstance(entry, dict) and "step" in entry]


def series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one logged quantity, one point per step (the last one logged wins)."""
    by_step = {int(entry["step"]): float(entry[key]) for entry in history if isinstance(entry.get(key), int | float)}
    steps = sorted(by_step)
    return steps, [by_step[step] for step in steps]


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI)


def plot_curves(history: Sequence[Mapping[str, Any]], metric: str, path: Path) -> bool:
    """Loss (training and evaluation) and the evaluation metric against step; False if nothing was logged."""
    train_loss, eval_metric = series(history, "loss"), series(history, f"eval_{metric}")
    # The mean over the examples where the run logged it (the Trainer's eval_loss weighs batches).
    eval_loss = series(history, "eval_cross_entropy")
    if not eval_loss[0]:
        eval_loss = series(history, "eval_loss")
    if not (train_loss[0] or eval_loss[0]):
        return False
    name = METRIC_NAMES.get(metric, metric)
    figure = Figure(figsize=CURVES_INCHES, dpi=DPI, layout="constrained")
    loss_axes, metric_axes = figure.subplots(1, 2)
    if train_loss[0]:
        loss_axes.plot(*train_loss, marker=".", label="training loss")
    if eval_loss[0]:
        loss_axes.plot(*eval_loss, marker="o", label="evaluation loss")
    loss_axes.set(title="Loss", xlabel="step", ylabel="cross-entropy loss")
    loss_axes.legend()
    loss_axes.grid(alpha=0.3)
    if eval_metric[0]:
        metric_axes.plot(*eval_metric, marker="o", color="tab:green", label=f"evaluation {name}")
        metric_axes.legend()
    else:
        metric_axes.text(0.5, 0.5, "no evaluations during training\n(set training.eval_steps)", ha="center")
    metric_axes.set(title=f"Evaluation {name}", xlabel="step", ylabel=name)
    metric_axes.grid(alpha=0.3)
    _save(figure, path)
    return True


def plot_learning_rate(history: Sequence[Mapping[str, Any]], path: Path) -> bool:
    steps, rates = series(history, "learning_rate")
    if not steps:
        return False
    figure = Figure(figsize=LEARNING_RATE_INCHES, dpi=DPI, layout="constrained")
    axes = figure.subplots()
    axes.plot(steps, rates, marker=".")
    axes.set(title="Learning rate schedule", xlabel="step", ylabel="learning rate")
    axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    axes.grid(alpha=0.3)
    _save(figure, path)
    return True


def plot_confusion(counts: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> None:
    figure = Figure(figsize=confusion_inches(len(labels)), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, label="examples")
    ticks = range(len(labels))
    axes.set_xticks(ticks, labels, rotation=45 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
    axes.set_yticks(ticks, labels)
    axes.set(title="Confusion matrix (counts)", xlabel="predicted label", ylabel="true label")
    brightest = max((max(row) for row in counts), default=0)
    for true_index, row in enumerate(counts):
        for predicted_index, count in enumerate(row):
            color = "white" if count > brightest / 2 else "black"
            axes.text(predicted_index, true_index, str(count), ha="center", va="center", color=color)
    _save(figure, path)


def _cell(text: object, limit: int = 160) -> str:
    flat = " ".join(str(text).split())
    flat = flat if len(flat) <= limit else flat[: limit - 1] + "…"
    return flat.replace("|", "\\|")


def _number(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(
    title: str,
    evaluation: Mapping[str, Any],
    mistakes: Sequence[Mapping[str, Any]],
    pictures: Mapping[str, str],
    training: Mapping[str, Any] | None = None,
) -> str:
    """report.md: the numbers, the pictures (by file name, beside the report), the worst mistakes."""
    lines = [
        f"# {title}",
        "",
        f"Model `{evaluation['model_dir']}`, evaluated on {evaluation['data']} "
        f"({evaluation['count']} examples, {evaluation.get('runtime', 'pytorch')} {evaluation['precision']} on "
        f"{evaluation['device']}) "
        f"at {evaluation['evaluated_at']}.",
        "",
        "| accuracy | macro F1 | examples | mistakes |",
        "| ---: | ---: | ---: | ---: |",
        f"| {evaluation['accuracy']:.4f} | {evaluation['macro_f1']:.4f} | {evaluation['count']} "
        f"| {evaluation['mistakes']} |",
        "",
        "## Per class",
        "",
        "| label | precision | recall | F1 | support |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, scores in evaluation["per_class"].items():
        lines.append(
            f"| {_cell(label)} | {scores['precision']:.4f} | {scores['recall']:.4f} | {scores['f1']:.4f} "
            f"| {scores['support']} |"
        )
    if CONFUSION in pictures.values():
        lines += ["", "## Confusion matrix", "", f"![Confusion matrix]({CONFUSION})"]
    if training:
        lines += ["", "## Training", ""]
        lines += [f"- {name}: {_number(value)}" for name, value in training.items() if value is not None]
    curves = [(alt, name) for alt, name in pictures.items() if name != CONFUSION]
    if curves:
        lines += [""] + [f"![{alt}]({name})" for alt, name in curves]
    elif training is not None:
        lines += ["", f"No training curves: the run has no log history ({TRAINER_STATE})."]
    lines += ["", f"## Worst mistakes (most confident wrong predictions, {min(len(mistakes), WORST_SHOWN)} of "
              f"{len(mistakes)}; all in mistakes.csv)", ""]  # fmt: skip
    if mistakes:
        lines += ["| # | true | predicted | score | text |", "| ---: | --- | --- | ---: | --- |"]
        for number, mistake in enumerate(mistakes[:WORST_SHOWN], start=1):
            lines.append(
                f"| {number} | {_cell(mistake['true_label'])} | {_cell(mistake['predicted_label'])} "
                f"| {mistake['score']:.3f} | {_cell(mistake['text'])} |"
            )
    else:
        lines.append("None: every example was classified correctly.")
    return "\n".join(lines) + "\n"
