"""`uv run evaluate [RUN] [--model-dir DIR] [--data FILE]`: how good a run is, written into its report.

Finds the run (default: `latest`; src/model_folder.py's one way), checks it as `serve` does
before anything is read or written (a damaged run keeps its report), and hands it to the task's
evaluation: on the run's own evaluation split (the one in its settings.yaml, the same subset
training used) the report is the run's own; `--data FILE` writes into `<run>/eval-<file name>/`
instead, so the run's own report stays. Prints the numbers and where the report is.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from src import model_folder
from src.contract import Task
from src.errors import UserError
from src.evaluation.report import REPORT
from src.fingerprints import changed
from src.runs import RUN_SETTINGS, section, stored_settings
from src.settings import DataSettings, load_settings

AnyData = TypeVar("AnyData", bound=DataSettings)
EVAL_FILE = "data.eval_file"  # how run.json's inputs name the evaluation split


def data_target(run_dir: Path, data_file: Path) -> Path:
    """Where an evaluation on another file goes: `<run>/eval-<file name>/`."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", data_file.name).strip("-.") or "data"
    return run_dir / f"eval-{name}"


def run_data(run_dir: Path, schema: type[AnyData], data_file: Path | None = None) -> AnyData:
    """The data settings the run trained with (as `schema`, the task's); with `data_file`, that file as the
    evaluation split (and a train split the loader reads but the evaluation ignores)."""
    stored = section(stored_settings(run_dir), "data")
    if not stored and data_file is None:
        raise UserError(f"{run_dir} holds no {RUN_SETTINGS} with a data section (not a training run): pass --data FILE")
    if data_file is not None:
        stored = {**stored, "dataset": None, "train_file": str(data_file), "eval_file": str(data_file),
                  "max_eval_samples": None}  # fmt: skip
    try:
        return schema.model_validate(stored)
    except ValidationError as error:
        problems = "; ".join(f"data.{'.'.join(map(str, found['loc']))}: {found['msg']}" for found in error.errors())
        raise UserError(f"{run_dir / RUN_SETTINGS}: {problems}: evaluate on a file with --data FILE"[:500]) from None


def offline_unless_reachable(dataset: str | None) -> None:
    """A Hub dataset with no Hub: use the cached copy at once, not after a minute of retries."""
    if dataset is not None and "HF_HUB_OFFLINE" not in os.environ:
        from src.hub import hub_reachable

        if not hub_reachable():
            os.environ["HF_HUB_OFFLINE"] = "1"


def main(argv: Sequence[str], task: Task[Any]) -> int:
    command = task.evaluation.command
    args = command.parse(argv)
    if args.run and args.model_dir:
        raise UserError("give a RUN or --model-dir, not both")
    if args.model_dir:
        model_dir = model_folder.resolve(args.model_dir, task.model_files)
    else:
        output_dir = load_settings(task.settings, flags=command.settings_flags(args)).training.output_dir
        model_dir = model_folder.find_run(output_dir, args.run, task.model_files)
    folder = task.inspect(model_dir)  # before anything is read or written: a damaged run keeps its report
    if args.data is not None and not args.data.is_file():
        raise UserError(f"--data {args.data}: no such file")
    if args.data is None and (problem := changed(model_folder.run_info(model_dir).get("inputs", {}), EVAL_FILE)):
        raise UserError(
            f"{problem} since run {model_dir.name} was trained and evaluated on it (run.json records its sha256): the "
            "run's report stays as it is; to score the run on the file as it is now, pass it with --data FILE "
            "(that report goes to a folder of its own)"
        )
    target = model_dir if args.data is None else data_target(model_dir, args.data)
    summary = task.evaluation.run()(folder, args, target)
    print(json.dumps({"run": model_dir.name, **summary, "report": str(target / REPORT)}, indent=2))
    return 0
