"""`uv run predict` as every task has it, on the tiny offline model: every format, no half files, no overwrites."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from src import tables
from src.evaluation import predict
from src.task import TASK
from tests.helpers.models import LOAD_DAMAGES, MODEL_DAMAGES, damaged_model
from tests.helpers.processes import call, only_error_line
from tests.task import samples

ANSWERS = TASK.prediction.suffix  # "predictions": the default output is <input>.predictions.<ext>


def answer_columns(model: Path) -> list[str]:
    return list(TASK.prediction.columns(TASK.inspect(model)))


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json", ".txt"])
def test_every_format_keeps_its_rows(trained_model: Path, tmp_path: Path, suffix: str) -> None:
    rows = samples.rows(12)
    source = tmp_path / f"in{suffix}"
    if suffix == ".txt":
        source.write_text("\n".join(row[samples.INPUT_COLUMN] for row in rows) + "\n")
    else:
        tables.write_table(rows, source, suffix[1:])
    assert call(predict.main, str(source), "--model-dir", str(trained_model)) == 0
    output = tmp_path / f"in.{ANSWERS}{'.jsonl' if suffix == '.txt' else suffix}"
    answered = tables.read_table(str(output)).rows
    assert [row["text" if suffix == ".txt" else samples.INPUT_COLUMN] for row in answered] == [
        row[samples.INPUT_COLUMN] for row in rows
    ]
    assert all(set(answer_columns(trained_model)) <= set(row) for row in answered)
    if suffix != ".txt":
        assert [row["id"] for row in answered] == [row["id"] for row in rows]


def test_stdin_to_stdout(
    trained_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [row[samples.INPUT_COLUMN] for row in samples.rows(2)]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\n".join(lines).encode() + b"\n")))
    assert call(predict.main, "-", "--model-dir", str(trained_model)) == 0
    answered = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in answered] == lines
    assert all(set(answer_columns(trained_model)) <= set(row) for row in answered)


def test_a_bad_line_stops_it_naming_the_line(
    trained_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [json.dumps(row) for row in samples.rows(1000)]
    lines[736] = ""
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    output = tmp_path / "out.jsonl"
    code = call(predict.main, str(tmp_path / "rows.jsonl"), "-o", str(output), "--model-dir", str(trained_model))
    assert code == 2
    assert "line 737" in only_error_line(capsys.readouterr().err)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["rows.jsonl"], "no output, no temporary file"


@pytest.mark.parametrize("damage", [*MODEL_DAMAGES, *LOAD_DAMAGES])
def test_a_model_folder_that_cannot_load_is_refused_like_serve_refuses_it(
    trained_model: Path, tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model = damaged_model(trained_model, tmp_path / "damaged", damage)
    source = samples.write_rows(tmp_path / "rows.jsonl", 20)
    assert call(predict.main, str(source), "--model-dir", str(model)) == 2
    assert str(model) in only_error_line(capsys.readouterr().err)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["damaged", "rows.jsonl"], "no output"


def test_input_columns_the_answers_would_overwrite_are_refused(
    trained_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "answered.jsonl"
    for column in answer_columns(trained_model):
        source.write_text(json.dumps({**samples.rows(1)[0], column: "mine"}) + "\n")
        assert call(predict.main, str(source), "--model-dir", str(trained_model)) == 2
        assert f"column {column!r} would be overwritten" in only_error_line(capsys.readouterr().err)
        assert sorted(path.name for path in tmp_path.iterdir()) == ["answered.jsonl"]


def test_force_replaces_an_existing_output(trained_model: Path, tmp_path: Path) -> None:
    source = samples.write_rows(tmp_path / "rows.jsonl", 5)
    output = tmp_path / f"rows.{ANSWERS}.jsonl"
    output.write_text("an older answer\n")
    assert call(predict.main, str(source), "--model-dir", str(trained_model)) == 2
    assert output.read_text() == "an older answer\n", "kept without --force"
    assert call(predict.main, str(source), "--model-dir", str(trained_model), "--force") == 0
    assert len(output.read_text().splitlines()) == 5
