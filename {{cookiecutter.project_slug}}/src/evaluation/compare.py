"""`uv run compare`: the finished runs side by side, newest first; `*` marks the one `latest` names.

One row per run under training.output_dir (or --runs-dir) with its key settings and the task's
metrics (Task.metrics), read from run.json, metrics.json and settings.yaml. Light: no torch,
nothing to load.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src import errors, flags, runs
from src.contract import Metric, Task
from src.runs import read_json, section, stored_settings
from src.settings import load_settings

LATEST_MARK = "*"
SETTINGS_COLUMNS = ["", "run", "finished (UTC)", "base model", "lr", "epochs", "max steps", "batch", "steps",
                    "train n", "eval n"]  # fmt: skip


def _shown(value: Any, spec: str = "g") -> str:
    if value is None or value == "":
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


def _model_name(checkpoint: str) -> str:
    """A Hub id as it is; a local folder by its last two parts (`.smoke/model`)."""
    if not checkpoint.startswith(("/", ".", "~")):
        return checkpoint
    path = Path(checkpoint)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def columns(metrics: Sequence[Metric]) -> list[str]:
    return [*SETTINGS_COLUMNS, *(metric.title for metric in metrics), "time (s)"]


def latest_run(output_dir: Path) -> Path | None:
    """The run `latest` names (None when there is no such pointer or it leads nowhere)."""
    link = output_dir / runs.LATEST
    if not (link.exists() or link.is_symlink()):
        return None
    try:
        target = runs.follow_latest(link)
    except OSError:
        return None
    return target if target.is_dir() else None


def rows(output_dir: Path, metrics: Sequence[Metric]) -> list[list[str]]:
    """One row per finished run, newest first, as displayed strings."""
    latest = latest_run(output_dir)
    table = []
    for run_dir in runs.finished_runs(output_dir):
        info, trained = runs.read_info(run_dir), read_json(run_dir / runs.METRICS)
        stored = stored_settings_or_empty(run_dir)
        training = section(stored, "training")
        base_model = str(info.get("base_model") or section(stored, "model").get("checkpoint") or "")
        max_steps = training.get("max_steps")
        table.append(
            [
                LATEST_MARK if latest is not None and run_dir.resolve() == latest else "",
                run_dir.name,
                str(info.get("finished_at", ""))[:19].replace("T", " "),
                _model_name(base_model) or "-",
                _shown(training.get("learning_rate")),
                _shown(training.get("num_train_epochs")),
                _shown(max_steps if isinstance(max_steps, int) and max_steps > 0 else None),
                _shown(trained.get("effective_batch_size") or training.get("per_device_train_batch_size")),
                _shown(trained.get("global_step")),
                _shown(trained.get("train_samples")),
                _shown(trained.get("eval_samples")),
                *(_shown(trained.get(metric.key), metric.spec) for metric in metrics),
                _shown(trained.get("train_runtime_s"), ".0f"),
            ]
        )
    return table


def stored_settings_or_empty(run_dir: Path) -> dict[str, Any]:
    try:
        return stored_settings(run_dir)
    except errors.UserError:
        return {}  # a damaged settings.yaml costs that run its settings columns, not the table


def render(table: Sequence[Sequence[str]], header: Sequence[str], markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in table)]) + "\n"
    widths = [max(len(cell) for cell in column) for column in zip(header, *table, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [header, *table]]  # fmt: skip
    footer = (f"{LATEST_MARK} = latest (what `uv run evaluate` uses; `uv run serve` serves models/production, the "
              "promoted run, or latest where none was)")  # fmt: skip
    return "\n".join(lines) + f"\n\n{footer}\n"


def main(argv: Sequence[str], task: Task[Any]) -> int:
    args = flags.COMPARE.parse(argv)
    output_dir = load_settings(task.settings, flags=flags.COMPARE.settings_flags(args)).training.output_dir
    table = rows(output_dir, task.metrics)
    if not table:
        print(f"No finished runs under {output_dir} yet: `uv run train-local --smoke` makes one in a minute.")
        return 0
    print(render(table, columns(task.metrics), args.markdown), end="")
    return 0
