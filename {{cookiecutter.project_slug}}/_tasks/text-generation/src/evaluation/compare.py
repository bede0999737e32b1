"""`uv run compare`: the finished runs side by side, newest first; `*` marks the one `latest` names.

One row per run under training.output_dir (or --runs-dir) with its key settings and metrics,
read from run.json, metrics.json and settings.yaml. Light: no torch, nothing to load.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src import errors, flags, runs
from src.config import load_settings
from src.runs import read_json, section, stored_settings

LATEST_MARK = "*"
COLUMNS = [
    "", "run", "finished (UTC)", "base model", "lr", "epochs", "max steps", "batch", "steps",
    "train n", "eval n", "eval loss", "perplexity", "time (s)",
]  # fmt: skip


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


def latest_run(output_dir: Path) -> Path | None:
    try:
        return runs.resolve_model_dir(output_dir / runs.LATEST)
    except (runs.ModelNotFoundError, OSError):
        return None


def rows(output_dir: Path) -> list[list[str]]:
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
                _shown(trained.get("eval_loss"), ".4f"),
                _shown(trained.get("perplexity"), ".4g"),
                _shown(trained.get("train_runtime_s"), ".0f"),
            ]
        )
    return table


def stored_settings_or_empty(run_dir: Path) -> dict[str, Any]:
    try:
        return stored_settings(run_dir)
    except errors.UserError:
        return {}  # a damaged settings.yaml costs that run its settings columns, not the table


def render(table: Sequence[Sequence[str]], markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
        return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in table)]) + "\n"
    widths = [max(len(cell) for cell in column) for column in zip(COLUMNS, *table, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [COLUMNS, *table]]  # fmt: skip
    return "\n".join(lines) + f"\n\n{LATEST_MARK} = latest (what `uv run serve` and `uv run evaluate` use)\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = flags.COMPARE.parse(sys.argv[1:] if argv is None else argv)
    output_dir = load_settings(flags=flags.COMPARE.settings_flags(args)).training.output_dir
    table = rows(output_dir)
    if not table:
        print(f"No finished runs under {output_dir} yet: `uv run train-local --smoke` makes one in a minute.")
        return 0
    print(render(table, args.markdown), end="")
    return 0


if __name__ == "__main__":
    errors.run(main)
