"""The pictures and the shared parts of report.md: training curves and facts, drawn headless with matplotlib.

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

from src.runs import RUN_INFO, TRAINER_STATE, atomic_path, read_json

CURVES = "training_curves.png"
LEARNING_RATE = "learning_rate.png"
REPORT = "report.md"
EVALUATION = "evaluation.json"  # the numbers of an evaluation, beside its report.md
DPI = 100
CURVES_INCHES = (12.0, 4.5)
LEARNING_RATE_INCHES = (6.0, 4.0)
WORST_SHOWN = 10  # mistakes in report.md; mistakes.csv has them all
METRIC_NAMES = {"f1": "macro F1", "accuracy": "accuracy"}


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


def save(figure: Figure, path: Path) -> None:
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
    save(figure, path)
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
    save(figure, path)
    return True


def cell(text: object, limit: int = 160) -> str:
    flat = " ".join(str(text).split())
    flat = flat if len(flat) <= limit else flat[: limit - 1] + "…"
    return flat.replace("|", "\\|")


def number(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_training(history: Sequence[Mapping[str, Any]], target: Path, metric: str) -> dict[str, str]:
    """The curves of a run's log history into `target`: {alt text: file name} of the pictures drawn."""
    pictures = {}
    if plot_curves(history, metric, target / CURVES):
        pictures["Training and evaluation curves"] = CURVES
    if plot_learning_rate(history, target / LEARNING_RATE):
        pictures["Learning rate"] = LEARNING_RATE
    return pictures


def training_facts(run_dir: Path, trained: Mapping[str, Any], training: Mapping[str, Any]) -> dict[str, Any]:
    """How a run was trained, for report.md: its metrics.json (`trained`) and its settings' training section."""
    return {
        "base model": read_json(run_dir / RUN_INFO).get("base_model"),
        "steps": trained.get("global_step"),
        "final training loss": trained.get("train_loss"),
        "learning rate": training.get("learning_rate"),
        "evaluated every": f"{training['eval_steps']} steps" if training.get("eval_steps") else None,
        "training time (s)": trained.get("train_runtime_s"),
    }


def facts(training: Mapping[str, Any] | None, pictures: Mapping[str, str]) -> list[str]:
    """report.md's lines for the training facts (None: not a training run) and the curves."""
    lines = []
    if training:
        lines += ["", "## Training", ""]
        lines += [f"- {name}: {number(value)}" for name, value in training.items() if value is not None]
    if pictures:
        lines += [""] + [f"![{alt}]({name})" for alt, name in pictures.items()]
    elif training is not None:
        lines += ["", f"No training curves: the run has no log history ({TRAINER_STATE})."]
    return lines
