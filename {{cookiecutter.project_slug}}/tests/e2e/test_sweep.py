"""`uv run sweep` through its real entry point: trials that are training runs, a study that survives kill -9
of its driver, one line for a bad search space or a second driver."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from src import promotion, runs
from src.models import sweep
from tests.helpers.models import with_smoke_assets
from tests.helpers.processes import clean_env, only_error_line, run_module, start_module, wait_until_none_with

QUICK = {"TRAINING__MAX_STEPS": "8", "TRAINING__EVAL_STEPS": "4", "TRAINING__SAVE_STEPS": "4"}


def trial_runs(output_dir: Path, study: str) -> list[Path]:
    return [
        run for run in runs.finished_runs(output_dir) if (runs.read_info(run).get("sweep") or {}).get("study") == study
    ]


def test_killed_with_sigkill_then_run_again_the_sweep_ends_with_its_trials_and_a_report(tmp_path: Path) -> None:
    """kill -9 of the driver's process group during the second trial, then the same command: exactly the trials
    asked for, each a finished run tagged with the study, no half-written run folder, `latest` untouched (it
    points at an earlier run), the journal and report.md with pictures naming the best run."""
    output_dir = with_smoke_assets(tmp_path)
    (output_dir / "earlier").mkdir()
    runs.point_latest(output_dir, "earlier")
    env = clean_env(TRAINING__OUTPUT_DIR=str(output_dir), **QUICK)
    command = ("sweep", "--smoke", "--trials", "2", "--study", "crashy")
    process = start_module("src", *command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    for line in process.stdout:  # the second trial (number 1) has started
        if line.startswith("trial 1 of crashy"):
            break
    else:
        raise AssertionError(f"the sweep ended before its second trial ({process.wait()})")
    deadline = time.monotonic() + 120
    while not list(output_dir.glob(".checkpoints/crashy-t1-*")) and time.monotonic() < deadline:
        time.sleep(0.2)  # it is training
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not wait_until_none_with("TRAINING__OUTPUT_DIR", str(output_dir), 20)
    assert len(trial_runs(output_dir, "crashy")) == 1, "the first trial was finished and published"

    again = run_module("src", *command, env=env, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "trial 1 of crashy was cut short" in again.stdout
    finished = trial_runs(output_dir, "crashy")
    assert len(finished) == 2
    assert sorted(runs.read_info(run)["sweep"]["trial"] for run in finished) == [0, 2], "the cut trial was replaced"
    assert runs.follow_latest(output_dir / runs.LATEST).name == "earlier", "trials never move latest"
    assert not list(output_dir.glob(".tmp-*")), "no half-written run folder"
    folder = output_dir / sweep.SWEEPS / "crashy"
    assert (folder / sweep.JOURNAL).is_file()
    summary = json.loads(again.stdout[again.stdout.rindex('{\n  "study"') :])
    assert summary["best_run"] in {run.name for run in finished}
    report = (folder / "report.md").read_text()
    assert summary["best_run"] in report
    assert "![history](history.png)" in report
    assert (folder / "history.png").stat().st_size > 1000


def test_promote_puts_the_best_run_through_the_gate(tmp_path: Path) -> None:
    """`sweep --promote`: the best run goes through `uv run promote`'s gate; with nothing promoted yet it passes
    and becomes the served run, and the promotion log says so."""
    output_dir = with_smoke_assets(tmp_path)
    env = clean_env(TRAINING__OUTPUT_DIR=str(output_dir), **QUICK)
    result = run_module("src", "sweep", "--smoke", "--trials", "1", "--study", "best", "--promote", env=env,
                        timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [best] = trial_runs(output_dir, "best")
    assert runs.follow_latest(output_dir / runs.PRODUCTION) == best.resolve()
    assert f"{best.name}: promoted" in result.stdout
    [decision] = [json.loads(line) for line in (output_dir / promotion.LOG).read_text().splitlines()]
    assert (decision["candidate"], decision["action"]) == (best.name, "promoted")


def test_ctrl_c_stops_the_running_trial_marks_it_failed_and_exits_130(tmp_path: Path) -> None:
    import optuna

    output_dir = with_smoke_assets(tmp_path)
    env = clean_env(TRAINING__OUTPUT_DIR=str(output_dir), **QUICK)
    process = start_module("src", "sweep", "--smoke", "--trials", "2", "--study", "stopped", env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(output_dir.glob(".checkpoints/stopped-t0-*")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the first trial is training
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal: the driver and its trial
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert not wait_until_none_with("TRAINING__OUTPUT_DIR", str(output_dir), 20), "the trial ended with the driver"
    study = optuna.load_study(
        study_name="stopped", storage=sweep.storage(output_dir / sweep.SWEEPS / "stopped" / sweep.JOURNAL)
    )
    assert [trial.state.name for trial in study.trials] == ["FAIL"]
    assert not trial_runs(output_dir, "stopped")


def test_a_second_driver_on_the_same_study_is_refused(tmp_path: Path) -> None:
    output_dir = with_smoke_assets(tmp_path)
    folder = output_dir / sweep.SWEEPS / "busy"
    folder.mkdir(parents=True)
    with (folder / "driver.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what a running driver holds
        result = run_module("src", "sweep", "--smoke", "--study", "busy",
                            env=clean_env(TRAINING__OUTPUT_DIR=str(output_dir)))  # fmt: skip
    assert result.returncode == 2
    assert "another `uv run sweep` is driving study busy" in only_error_line(result.stderr)
    assert not runs.finished_runs(output_dir)


@pytest.mark.parametrize(
    ("space", "problem"),
    [("{training.learnin_rate: {low: 1, high: 2}}", "'training.learnin_rate' is not a field of training"),
     ("{}", "sweep.space is empty")],
    ids=["not-a-settings-field", "empty"],
)  # fmt: skip
def test_a_bad_search_space_is_one_line_and_writes_nothing(tmp_path: Path, space: str, problem: str) -> None:
    result = run_module(
        "src", "sweep", "--smoke", env=clean_env(TRAINING__OUTPUT_DIR=str(tmp_path), SWEEP__SPACE=space)
    )
    assert result.returncode == 2
    line = only_error_line(result.stderr)
    assert problem in line
    assert "(got" not in line, "the line names the field, not every setting's value"
    assert list(tmp_path.iterdir()) == []
