"""Metrics, the evaluation settings, and the files predict reads and writes (no model needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from src.config import PROJECT_ROOT, SettingsError, load_settings
from src.errors import UserError
from src.evaluation import metrics, predict, tables


def test_classification_report_by_hand() -> None:
    truth = [0, 0, 0, 1, 1, 2]
    predicted = [0, 0, 1, 1, 0, 1]
    report = metrics.classification_report(truth, predicted, ["a", "b", "c"])
    assert report["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [0, 1, 0]]
    assert report["accuracy"] == pytest.approx(3 / 6)
    assert report["per_class"]["a"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                                        "f1": pytest.approx(2 / 3), "support": 3}  # fmt: skip
    assert report["per_class"]["b"]["precision"] == pytest.approx(1 / 3)
    assert report["per_class"]["b"]["recall"] == pytest.approx(1 / 2)
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    f1_b = 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)
    assert report["macro_f1"] == pytest.approx((2 / 3 + f1_b + 0.0) / 3)
    assert report["macro_f1"] == pytest.approx(metrics.macro_f1(truth, predicted))


def test_cross_entropy_is_the_mean_over_the_examples() -> None:
    logits = [[0.0, math.log(3.0)], [math.log(4.0), 0.0], [0.0, 0.0]]  # probabilities 3/4, 4/5 and 1/2 of the truth
    expected = -(math.log(3 / 4) + math.log(4 / 5) + math.log(1 / 2)) / 3
    assert metrics.cross_entropy(logits, [1, 0, 1]) == pytest.approx(expected)
    assert metrics.cross_entropy([[1000.0, 0.0]], [0]) == pytest.approx(0.0), "no overflow on large logits"


def test_macro_f1_averages_only_labels_that_occur() -> None:
    # Label 2 of 3 never appears: a 0 for it would drag the average down for nothing.
    report = metrics.classification_report([0, 1, 1], [0, 1, 1], ["a", "b", "c"])
    assert report["macro_f1"] == 1.0
    assert report["per_class"]["c"]["support"] == 0


@pytest.mark.parametrize(
    ("training", "fragment"),
    [
        ({"keep_best_model": True, "eval_steps": None}, "training.keep_best_model: needs evaluations"),
        (
            {"keep_best_model": True, "eval_steps": 30, "save_steps": 200},
            r"training.keep_best_model: needs save_steps \(200\) to be a multiple of eval_steps \(30\)",
        ),
        ({"best_model_metric": "loss"}, "training.best_model_metric"),
        ({"eval_steps": 0}, "training.eval_steps"),
    ],
)
def test_evaluation_settings_are_checked(training: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        load_settings(PROJECT_ROOT / "configs" / "settings.yaml", environ={}, overrides={"training": training})


def test_keep_best_model_with_matching_steps_is_accepted() -> None:
    training = {"keep_best_model": True, "eval_steps": 50, "save_steps": 200}
    settings = load_settings(PROJECT_ROOT / "configs" / "settings.yaml", environ={}, overrides={"training": training})
    assert settings.training.keep_best_model


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_rows_keep_their_line_numbers(tmp_path: Path) -> None:
    csv_file = write(tmp_path / "in.csv", 'id,text\n1,"first\nspans two lines"\n2,second\n3,\n')
    table = tables.read_table(str(csv_file))
    assert table.places == ["line 2", "line 4", "line 5"]
    with pytest.raises(UserError, match=r"in\.csv line 5: no text in 'text': empty"):
        tables.texts(table, "text")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("", "line 3 is empty"),
        ("   ", "line 3 is empty"),
        ('{"text": ""}', "line 3: no text in 'text': empty"),
        ('{"text": null}', "line 3: no text in 'text': missing"),
        ('{"review": "fine"}', "line 3: no text in 'text': missing .*--text-column"),
        ('{"text": 5}', "line 3: no text in 'text': not text"),
        ('{"text": "x"', "line 3: not valid JSON"),
        ('["text"]', "line 3: expected a JSON object"),
    ],
)
def test_a_row_without_text_names_its_line(tmp_path: Path, line: str, problem: str) -> None:
    path = write(tmp_path / "in.jsonl", f'{{"text": "a"}}\n{{"text": "b"}}\n{line}\n{{"text": "d"}}\n')
    with pytest.raises(UserError, match=problem):
        tables.texts(tables.read_table(str(path)), "text")


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.jsonl", b"", "is empty: nothing to classify"),
        ("blank.txt", b"\n\n  \n", "is empty: nothing to classify"),
        ("garbage.jsonl", b'{"text": "ok"}\n\xff\xfe\x00\x81binary', r"line 2: not UTF-8"),
        ("garbage.parquet", b"PAR1 not really", "not a readable Parquet file"),
        ("notes.docx", b"hello", r"unknown file type '\.docx'"),
        ("broken.json", b'[{"text": "a"}', "not valid JSON"),
    ],
)
def test_unreadable_inputs_say_why(tmp_path: Path, name: str, content: bytes, problem: str) -> None:
    with pytest.raises(UserError, match=problem):
        tables.read_table(str(write(tmp_path / name, content)))


def test_a_header_without_rows_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="has no rows"):
        tables.texts(tables.read_table(str(write(tmp_path / "in.csv", "text,label\n"))), "text")


def test_csv_without_the_text_column_names_the_columns(tmp_path: Path) -> None:
    table = tables.read_table(str(write(tmp_path / "in.csv", "review,stars\ngreat,5\n")))
    with pytest.raises(UserError, match=r"no column 'text' \(it has \['review', 'stars'\]\): pass --text-column"):
        tables.texts(table, "text")


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_tables_round_trip(tmp_path: Path, suffix: str) -> None:
    rows = [{"id": "1", "text": 'héllo, "world"\nnext line'}, {"id": "2", "text": "plain"}]
    path = tmp_path / f"out{suffix}"
    tables.write_table(rows, path, tables.kind_of(path, "-o"))
    again = tables.read_table(str(path))
    assert again.rows == rows
    assert tables.texts(again, "text") == [row["text"] for row in rows]
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file left"


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    class Unwritable:
        def __repr__(self) -> str:
            raise KeyboardInterrupt  # Ctrl-C halfway through writing the rows

    rows = [{"text": "first"}] * 1000 + [{"text": Unwritable()}]
    with pytest.raises(KeyboardInterrupt):
        tables.write_table(rows, tmp_path / "out.csv", "csv")
    assert list(tmp_path.iterdir()) == []


def test_plain_text_crlf_and_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "in.txt", "\ufefffirst\r\nsecond\r\n".encode())
    table = tables.read_table(str(path))
    assert tables.texts(table, "text") == ["first", "second"]


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """Enough of a saved model for predict to accept the folder (it fails before loading it)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "neg", "1": "pos"}}))
    return folder


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["{dir}/none.jsonl"], r"none\.jsonl does not exist"),
        (["{dir}/in.jsonl", "-o", "{dir}"], "is a folder: give a file name"),
        (["{dir}/in.jsonl", "-o", "{dir}/missing/out.jsonl"], "folder .*missing does not exist"),
        (["{dir}/in.jsonl", "-o", "{dir}/out.txt"], "plain text cannot hold the predictions"),
        (["{dir}/in.jsonl", "-o", "{dir}/out.xlsx"], r"unknown file type '\.xlsx'"),
        (["{dir}/in.jsonl", "--text-column", "review"], r"line 1: no text in 'review'"),
        (["{dir}"], r"unknown file type"),
        (["{dir}/in.jsonl", "-o", "{dir}/in.jsonl"], "is the input file: predictions never replace their input"),
        (["{dir}/in.jsonl", "-o", "{dir}/old.jsonl"], r"old\.jsonl exists: pass --force to replace it"),
        (["{dir}/in.jsonl", "-o", "{dir}/link.jsonl", "--force"], "is a symbolic link"),
        (["{dir}/twice.csv"], "column 'text' appears twice in the header: rename one"),
        (["{dir}/surrogate.jsonl"], r"line 2: the text in 'text' is not valid Unicode"),
    ],
)
def test_predict_refuses_before_loading_the_model(
    tmp_path: Path, model_folder: Path, args: list[str], problem: str
) -> None:
    write(tmp_path / "in.jsonl", '{"text": "fine"}\n')
    write(tmp_path / "old.jsonl", '{"kept": true}\n')
    write(tmp_path / "twice.csv", "text,text\nfirst,second\n")
    write(tmp_path / "surrogate.jsonl", '{"text": "fine"}\n{"text": "\\ud800"}\n')  # JSON's escape of a lone surrogate
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "old.jsonl")
    before = sorted(path.name for path in tmp_path.iterdir())
    with pytest.raises(UserError, match=problem):
        predict.main([arg.format(dir=tmp_path) for arg in args] + ["--model-dir", str(model_folder)])
    assert sorted(path.name for path in tmp_path.iterdir()) == before, "nothing written"
