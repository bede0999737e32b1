"""`uv run evaluate` as every task has it: the run it finds, the errors it names, the report it keeps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from src.evaluation import evaluate, report
from src.evaluation.report import EVALUATION
from tests.helpers.models import MODEL_DAMAGES, smoke_file_settings
from tests.helpers.processes import call, only_error_line


def test_training_evaluates_at_the_interval(trained_model: Path) -> None:
    history = report.log_history(trained_model)
    eval_steps = [entry["step"] for entry in history if "eval_loss" in entry]
    interval = smoke_file_settings().training.eval_steps
    assert interval
    final = json.loads((trained_model / "metrics.json").read_text())["global_step"]
    during = list(range(interval, final + 1, interval))
    if final % interval:
        during.append(final)  # the Trainer evaluates the last step too
    assert eval_steps[: len(during)] == during, "evaluations during the run"
    assert eval_steps[-1] == final, "and the final evaluation (metrics.json)"
    assert any("loss" in entry and "learning_rate" in entry for entry in history)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["no-such-run"], "no run 'no-such-run'"),
        (["--data", "{dir}/missing.jsonl"], "missing.jsonl: no such file"),
        (["../escape"], "a run id is a folder name"),
        (["latest", "--model-dir", "{dir}"], "give a RUN or --model-dir, not both"),
        (["--model-dir", "{dir}/nowhere"], "no trained model"),
    ],
)
def test_evaluate_errors_are_one_line(
    trained_model: Path, tmp_path: Path, args: list[str], fragment: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("TRAINING__OUTPUT_DIR", str(trained_model.parent))  # the run is read-only: nothing written
    assert call(evaluate.main, *[arg.format(dir=tmp_path) for arg in args]) == 2
    assert re.search(fragment, only_error_line(capsys.readouterr().err))


@pytest.mark.parametrize("damage", MODEL_DAMAGES)
def test_a_damaged_run_is_refused_and_keeps_its_report(
    run_copy: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = {name: (run_copy / name).read_bytes() for name in (report.REPORT, EVALUATION)}
    MODEL_DAMAGES[damage](run_copy)
    assert call(evaluate.main, "--model-dir", str(run_copy)) == 2
    assert str(run_copy) in only_error_line(capsys.readouterr().err)
    if run_copy.is_dir():  # one damage replaces the whole folder with a file
        assert {name: (run_copy / name).read_bytes() for name in kept} == kept, "report.md and evaluation.json kept"
