"""`uv run compare`: finished runs side by side, newest first, `latest` marked (no model needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from src import runs
from src.evaluation import compare
from src.task import TASK
from tests.helpers.processes import call

HEADLINE = TASK.metrics[0]  # the task's first number, written here as `accuracy` (no model: any number will do)
COLUMNS = compare.columns(TASK.metrics)


def finished_run(output_dir: Path, run_id: str, finished_at: str, accuracy: float, learning_rate: float) -> Path:
    run_dir = output_dir / run_id
    run_dir.mkdir(parents=True)
    (run_dir / TASK.model_files.config).write_text("{}")
    runs.write_json(run_dir / runs.RUN_INFO, {"run_id": run_id, "finished_at": finished_at, "base_model": "org/bert"})
    numbers = {metric.key: accuracy - index / 100 for index, metric in enumerate(TASK.metrics)}
    runs.write_json(run_dir / runs.METRICS, {**numbers, "global_step": 152})
    settings = {"training": {"learning_rate": learning_rate, "num_train_epochs": 4.0, "max_steps": -1}}
    (run_dir / "settings.yaml").write_text(yaml.safe_dump(settings))
    return run_dir


def three_runs(output_dir: Path) -> None:
    finished_run(output_dir, "old", "2026-12-01T10:00:00+00:00", 0.71, 1e-4)
    finished_run(output_dir, "middle", "2026-12-02T10:00:00+00:00", 0.82, 3e-3)
    finished_run(output_dir, "new", "2026-12-03T10:00:00+00:00", 0.65, 5e-5)
    runs.point_latest(output_dir, "middle")  # e.g. pointed back at the better run by hand
    (output_dir / ".checkpoints" / "unfinished").mkdir(parents=True)  # not a finished run: not listed


def test_rows_are_newest_first_and_mark_latest(tmp_path: Path) -> None:
    three_runs(tmp_path)
    table = compare.rows(tmp_path, TASK.metrics)
    assert [row[1] for row in table] == ["new", "middle", "old"]
    assert [row[0] for row in table] == ["", compare.LATEST_MARK, ""]
    middle = dict(zip(COLUMNS, table[1], strict=True))
    assert middle[HEADLINE.title] == format(0.82, HEADLINE.spec)
    assert middle["lr"] == "0.003"
    assert middle["base model"] == "org/bert"
    assert middle["steps"] == "152"


def test_command_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    three_runs(tmp_path)
    assert call(compare.main, "--runs-dir", str(tmp_path)) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    header, *body, legend = lines
    assert header.split()[:2] == ["run", "finished"]
    assert all(metric.title.split()[0] in header for metric in TASK.metrics)
    assert [line.split()[0:2] for line in body] == [["new", "2026-12-03"], ["*", "middle"], ["old", "2026-12-01"]]
    assert "latest" in legend

    assert call(compare.main, "--runs-dir", str(tmp_path), "--markdown") == 0
    assert capsys.readouterr().out.splitlines()[3].startswith("| * | middle |")


def test_no_runs_says_how_to_make_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert call(compare.main, "--runs-dir", str(tmp_path / "nothing")) == 0
    assert "uv run train-local --smoke" in capsys.readouterr().out


def test_damaged_run_files_cost_their_cells_not_the_table(tmp_path: Path) -> None:
    three_runs(tmp_path)
    (tmp_path / "old" / "settings.yaml").write_text("training: [unclosed\n")
    (tmp_path / "new" / runs.RUN_INFO).write_text("{half")
    table = {row[1]: dict(zip(COLUMNS, row, strict=True)) for row in compare.rows(tmp_path, TASK.metrics)}
    assert table["old"]["lr"] == "-"
    assert table["old"][HEADLINE.title] == format(0.71, HEADLINE.spec)
    assert table["new"]["base model"] == "-"
