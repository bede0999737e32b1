"""`uv run evaluate` as every task has it: the run it finds, the errors it names, the report it keeps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from src.evaluation import evaluate, report
from src.evaluation.report import EVALUATION
from tests.helpers.models import LOAD_DAMAGES, MODEL_DAMAGES, smoke_file_settings
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


@pytest.mark.parametrize("damage", [*MODEL_DAMAGES, *LOAD_DAMAGES])
def test_a_damaged_run_is_refused_and_keeps_its_report(
    run_copy: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = {name: (run_copy / name).read_bytes() for name in (report.REPORT, EVALUATION)}
    {**MODEL_DAMAGES, **LOAD_DAMAGES}[damage](run_copy)
    assert call(evaluate.main, "--model-dir", str(run_copy)) == 2
    assert str(run_copy) in only_error_line(capsys.readouterr().err)
    if run_copy.is_dir():  # one damage replaces the whole folder with a file
        assert {name: (run_copy / name).read_bytes() for name in kept} == kept, "report.md and evaluation.json kept"


def test_evaluation_data_changed_since_training_is_refused_and_the_report_kept(
    run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run's report is about the data it was evaluated on: changed since (run.json records its sha256),
    the run's own evaluation is refused; `--data` scores the file as it is now, into a folder of its own."""
    info = json.loads((run_copy / "run.json").read_text())
    recorded = info["inputs"]["data.eval_file"]
    eval_copy = tmp_path / "eval.jsonl"
    eval_copy.write_bytes(Path(recorded["path"]).read_bytes())
    info["inputs"]["data.eval_file"]["path"] = str(eval_copy)
    (run_copy / "run.json").write_text(json.dumps(info))
    kept = (run_copy / report.REPORT).read_bytes()

    rows = eval_copy.read_text().splitlines()
    eval_copy.write_text("\n".join(rows[: len(rows) // 2]) + "\n")  # what another smoke build did to the file
    assert call(evaluate.main, "--model-dir", str(run_copy)) == 2
    line = only_error_line(capsys.readouterr().err)
    assert f"{eval_copy} has changed since run {run_copy.name}" in line
    assert "--data" in line
    assert (run_copy / report.REPORT).read_bytes() == kept

    assert call(evaluate.main, "--model-dir", str(run_copy), "--data", str(eval_copy)) == 0
    assert (run_copy / report.REPORT).read_bytes() == kept


def test_a_bad_value_in_the_runs_stored_settings_is_one_line(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = run_copy / "settings.yaml"
    settings = yaml.safe_load(stored.read_text())
    settings["data"]["max_eval_samples"] = -3
    stored.write_text(yaml.safe_dump(settings))
    assert call(evaluate.main, "--model-dir", str(run_copy)) == 2
    line = only_error_line(capsys.readouterr().err)
    assert "data.max_eval_samples: Input should be greater than or equal to 1" in line
    assert "--data" in line
