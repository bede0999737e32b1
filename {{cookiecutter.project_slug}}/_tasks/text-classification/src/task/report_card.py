"""A classifier's report.md and its confusion matrix picture (curves and training facts: src/evaluation/report.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from src.evaluation.report import DPI, WORST_SHOWN, cell, facts, save

CONFUSION = "confusion_matrix.png"


def confusion_inches(num_labels: int) -> tuple[float, float]:
    side = max(5.0, 0.6 * num_labels + 2.0)  # cells stay readable with many labels
    return side + 1.0, side


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
    save(figure, path)


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
            f"| {cell(label)} | {scores['precision']:.4f} | {scores['recall']:.4f} | {scores['f1']:.4f} "
            f"| {scores['support']} |"
        )
    if CONFUSION in pictures.values():
        lines += ["", "## Confusion matrix", "", f"![Confusion matrix]({CONFUSION})"]
    lines += facts(training, {alt: name for alt, name in pictures.items() if name != CONFUSION})
    lines += ["", f"## Worst mistakes (most confident wrong predictions, {min(len(mistakes), WORST_SHOWN)} of "
              f"{len(mistakes)}; all in mistakes.csv)", ""]  # fmt: skip
    if mistakes:
        lines += ["| # | true | predicted | score | text |", "| ---: | --- | --- | ---: | --- |"]
        for place, mistake in enumerate(mistakes[:WORST_SHOWN], start=1):
            lines.append(
                f"| {place} | {cell(mistake['true_label'])} | {cell(mistake['predicted_label'])} "
                f"| {mistake['score']:.3f} | {cell(mistake['text'])} |"
            )
    else:
        lines.append("None: every example was classified correctly.")
    return "\n".join(lines) + "\n"
