"""`uv run promote [RUN]`: move `models/production` (what serve and serve-cloud serve) to a run that passes the gate.

The run folders are the registry: `<training.output_dir>/latest` stays the newest finished run,
`<training.output_dir>/production` names the promoted one (written atomically, like `latest`).
The gate (settings `promotion`) compares the candidate (RUN, default: latest) with the promoted
run on the same evaluation data: each run's metrics.json holds the task's evaluation on the
whole evaluation split at the end of training (`uv run evaluate`'s numbers), and when the two
runs were evaluated on different data (run.json's record of the data settings and of a local
file's sha256) the promoted run is evaluated again, through the task's own evaluate, on the
candidate's evaluation file. The candidate passes when it is no worse than the promoted run by
more than `max_regression` and clears `min_value`; nothing promoted yet: the floor alone.
A failed gate is one line naming both numbers and exit 1, the pointer untouched; `--force
REASON` moves it anyway, recording the reason; `--rollback` returns to the run promoted before.
Every decision is appended to `<training.output_dir>/promotions.jsonl` (time, action, candidate,
incumbent, both numbers, who: git's user.name when there is one). One promotion at a time
(a lock beside the log).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from src import flags, model_folder, runs
from src.contract import Task
from src.errors import UserError
from src.settings import Settings, load_settings

LOG = "promotions.jsonl"
EXIT_GATE_FAILED = 1
DATA_SETTINGS = ("dataset", "eval_file", "eval_split", "max_eval_samples")


class GateFailedError(Exception):
    """The candidate did not pass; the message names both numbers."""


def promoted(output_dir: Path) -> Path | None:
    """The promoted run, if a run was ever promoted."""
    pointer = output_dir / runs.PRODUCTION
    return runs.follow_latest(pointer) if pointer.exists() or pointer.is_symlink() else None


def metric_of(settings: Settings, task: Task[Any]) -> tuple[str, bool]:
    wanted = settings.promotion.metric or task.metrics[0].key
    for metric in task.metrics:
        if metric.key == wanted:
            return metric.key, metric.higher_is_better
    known = ", ".join(metric.key for metric in task.metrics)
    raise UserError(f"promotion.metric {wanted!r}: not a metric of this task's runs (use one of {known})")


def gate(candidate: float, incumbent: float | None, higher_is_better: bool, settings: Settings) -> str | None:
    """Why the candidate fails the gate, or None when it passes."""
    promotion = settings.promotion
    sign = 1.0 if higher_is_better else -1.0
    if not math.isfinite(candidate):
        return "it is not a finite number"
    if promotion.min_value is not None and sign * (candidate - promotion.min_value) < 0:
        bound = "floor" if higher_is_better else "ceiling"
        return f"it is past the {bound} promotion.min_value {promotion.min_value:g}"
    if incumbent is not None and sign * (incumbent - candidate) > promotion.max_regression + 1e-12:
        return f"it is worse than the promoted run's by more than promotion.max_regression {promotion.max_regression:g}"
    return None


def evaluation_data(run: Path) -> tuple[Any, ...]:
    """What the run was evaluated on: the data settings it trained with and the local file's sha256."""
    data = runs.stored_settings(run).get("data") or {}
    recorded = (model_folder.run_info(run).get("inputs") or {}).get("data.eval_file") or {}
    digest = recorded.get("sha256") if isinstance(recorded, dict) else None
    return (*(json.dumps(data.get(key)) for key in DATA_SETTINGS), digest)


def score(run: Path, key: str) -> float:
    value = runs.read_json(run / runs.METRICS).get(key)
    if not isinstance(value, int | float):
        raise UserError(f"run {run.name} has no {key} in {runs.METRICS}: `uv run evaluate {run.name}` writes it")
    return float(value)


def score_on(run: Path, data_file: Path, key: str, task: Task[Any]) -> float:
    """The run's metric on another evaluation file, through the task's evaluate (its report beside the run's)."""
    from src.evaluation.evaluate import data_target

    args = task.evaluation.command.parse(["--model-dir", str(run), "--data", str(data_file)])
    summary = task.evaluation.run()(task.inspect(run), args, data_target(run, data_file))
    value = summary.get(key)
    if not isinstance(value, int | float):
        raise UserError(f"evaluating {run.name} on {data_file} gave no {key}")
    return float(value)


def scores(candidate: Path, incumbent: Path | None, key: str, task: Task[Any]) -> tuple[float, float | None]:
    """Both runs' metric on the candidate's evaluation data (when the runs' data differ: both scored on its file)."""
    if incumbent is None:
        return score(candidate, key), None
    if evaluation_data(candidate) == evaluation_data(incumbent):
        return score(candidate, key), score(incumbent, key)
    eval_file = (runs.stored_settings(candidate).get("data") or {}).get("eval_file")
    if not eval_file or not Path(eval_file).is_file():
        raise UserError(f"runs {candidate.name} and {incumbent.name} were evaluated on different data, and "
                        f"{candidate.name}'s is not a local file to score both on: promote with --force REASON, "
                        "or train the candidate on the promoted run's data")  # fmt: skip
    return score_on(candidate, Path(eval_file), key, task), score_on(incumbent, Path(eval_file), key, task)


def who() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        name = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True, timeout=5).stdout.strip()
        if name:
            return name
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return "unknown"


def record(output_dir: Path, entry: Mapping[str, Any]) -> None:
    """Append one decision to the log (one line, flushed to disk)."""
    line = json.dumps({"time": runs.timestamp(runs.now_utc()), **entry, "by": who()}) + "\n"
    with (output_dir / LOG).open("a", encoding="utf-8") as log:
        log.write(line)
        log.flush()
        os.fsync(log.fileno())


def history(output_dir: Path) -> list[dict[str, Any]]:
    path = output_dir / LOG
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise UserError(f"{path}, line {number}: not a JSON object; fix or remove that line") from None
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


@contextlib.contextmanager
def one_at_a_time(output_dir: Path) -> Iterator[None]:
    output_dir.mkdir(parents=True, exist_ok=True)
    with (output_dir / ".promotion.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `uv run promote` is at work on {output_dir}: wait for it") from None
        yield


def promote(settings: Settings, task: Task[Any], run: str | None, force: str | None) -> dict[str, Any]:
    """Gate RUN (default: latest) against the promoted run; move the pointer when it passes or is forced."""
    output_dir = settings.training.output_dir
    candidate = model_folder.find_run(output_dir, run, task.model_files)
    task.inspect(candidate)  # a damaged run is refused as serve would refuse it
    key, higher = metric_of(settings, task)
    incumbent = promoted(output_dir)
    entry: dict[str, Any] = {"candidate": candidate.name, "incumbent": incumbent.name if incumbent else None,
                             "metric": key}  # fmt: skip
    if incumbent is not None and incumbent == candidate.resolve():
        return {**entry, "action": "unchanged", "note": f"{candidate.name} is already the promoted run"}
    try:
        mine, theirs = scores(candidate, incumbent if incumbent and incumbent.is_dir() else None, key, task)
        problem = gate(mine, theirs, higher, settings)
    except UserError as error:  # the runs cannot be compared: only --force promotes, and the log says why
        if force is None:
            raise
        mine, theirs, problem = None, None, f"not compared: {error}"
    entry.update(candidate_value=mine, incumbent_value=theirs)
    if problem is not None and force is None:
        record(output_dir, {**entry, "action": "refused", "reason": problem})
        against = (
            f" against {theirs:.4g} for the promoted run {incumbent.name}" if incumbent and theirs is not None else ""
        )
        raise GateFailedError(f"run {candidate.name} is not promoted: {key} {mine:.4g}{against}: {problem} "
                         f"(`uv run promote {candidate.name} --force REASON` promotes it anyway)")  # fmt: skip
    action = "forced" if problem is not None else "promoted"
    runs.point(output_dir, runs.PRODUCTION, candidate.name)
    record(output_dir, {**entry, "action": action, **({"reason": force} if problem is not None else {})})
    return {**entry, "action": action}


def rollback(settings: Settings, task: Task[Any]) -> dict[str, Any]:
    """Back to the run that was promoted before the current one (again: further back)."""
    output_dir = settings.training.output_dir
    current = promoted(output_dir)
    if current is None:
        raise UserError(f"nothing was promoted under {output_dir}: there is nothing to roll back")
    moves = [entry for entry in history(output_dir) if entry.get("action") in ("promoted", "forced", "rolled back")]
    last = moves[-1] if moves and moves[-1].get("candidate") == current.name else {}
    target = last.get("back_to") if last.get("action") == "rolled back" else last.get("incumbent")
    if not target:
        raise UserError(f"{output_dir / LOG} names no run promoted before {current.name}: promote one by id "
                        "(`uv run promote RUN`)")  # fmt: skip
    previous = model_folder.find_run(output_dir, str(target), task.model_files)
    task.inspect(previous)
    # where a further rollback goes: what was promoted before `previous` was
    before = [move for move in moves if move.get("candidate") == previous.name and move.get("action") != "rolled back"]
    entry = {"action": "rolled back", "candidate": previous.name, "incumbent": current.name,
             "back_to": before[-1].get("incumbent") if before else None}  # fmt: skip
    runs.point(output_dir, runs.PRODUCTION, previous.name)
    record(output_dir, entry)
    return entry


def main(argv: Sequence[str], task: Task[Any]) -> int:
    args = flags.PROMOTE.parse(argv)
    if args.rollback and (args.run or args.force is not None):
        raise UserError("--rollback takes no RUN or --force: it returns to the run promoted before")
    if args.force is not None and not args.force.strip():
        raise UserError("--force needs a REASON (it goes into the promotion log): --force 'why this run'")
    if args.run:
        runs.check_run_id(args.run, "RUN")  # before anything is written
    settings = load_settings(task.settings, flags=flags.PROMOTE.settings_flags(args))
    with one_at_a_time(settings.training.output_dir):
        try:
            outcome = rollback(settings, task) if args.rollback else promote(settings, task, args.run, args.force)
        except GateFailedError as failed:
            print(f"error: {failed}", file=sys.stderr)
            return EXIT_GATE_FAILED
    print(json.dumps(outcome, indent=2))
    return 0


def after_training(settings: Settings, task: Task[Any], run: str) -> int:
    """train-local --promote: the gate for the run just published (exit 1 when it fails, the run kept)."""
    with one_at_a_time(settings.training.output_dir):
        try:
            outcome = promote(settings, task, run, None)
        except GateFailedError as failed:
            print(f"error: {failed}", file=sys.stderr)
            return EXIT_GATE_FAILED
    print(f"{run}: {outcome['action']} ({outcome['metric']} {outcome.get('candidate_value', 0):.4g})", flush=True)
    return 0
