"""The files predict and evaluate read and write, and what predict refuses before it loads a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src import tables
from src.errors import UserError
from src.evaluation import predict
from src.task import TASK
from tests.task import samples


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
        ("empty.jsonl", b"", "is empty: no rows to answer"),
        ("blank.txt", b"\n\n  \n", "is empty: no rows to answer"),
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
    """Enough of a saved model for predict to find the folder (it fails before loading it)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / TASK.model_files.config).write_text("{}")
    return folder


ANSWERS = TASK.prediction.suffix  # "predictions", "completions"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["{dir}/none.jsonl"], r"none\.jsonl does not exist"),
        (["{dir}/in.txt", "-o", "{dir}"], "is a folder: give a file name"),
        (["{dir}/in.txt", "-o", "{dir}/missing/out.jsonl"], "folder .*missing does not exist"),
        (["{dir}/in.txt", "-o", "{dir}/out.txt"], f"plain text cannot hold the {ANSWERS}"),
        (["{dir}/in.txt", "-o", "{dir}/out.xlsx"], r"unknown file type '\.xlsx'"),
        (["{dir}"], r"unknown file type"),
        (["{dir}/in.txt", "-o", "{dir}/in.txt"], f"is the input file: {ANSWERS} never replace their input"),
        (["{dir}/in.txt", "-o", "{dir}/old.jsonl"], r"old\.jsonl exists: pass --force to replace it"),
        (["{dir}/in.txt", "-o", "{dir}/link.jsonl", "--force"], "is a symbolic link"),
        (["{dir}/twice.csv"], "column 'text' appears twice in the header: rename one"),
        (["{dir}/nested.jsonl"], "line 2: nested deeper than JSON can be read here"),
        (["{dir}/mixed.jsonl", "-o", "{dir}/out.parquet"], "column 'n' mixes kinds of values, which parquet cannot"),
    ],
)
def test_predict_refuses_before_loading_the_model(
    tmp_path: Path, model_folder: Path, args: list[str], problem: str
) -> None:
    write(tmp_path / "in.txt", "fine\n")
    write(tmp_path / "old.jsonl", '{"kept": true}\n')
    write(tmp_path / "twice.csv", "text,text\nfirst,second\n")
    first = json.dumps(samples.rows(1)[0])
    write(tmp_path / "nested.jsonl", first + "\n" + '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    mixed = [{**row, "n": value} for row, value in zip(samples.rows(2), [1, "one"], strict=True)]
    write(tmp_path / "mixed.jsonl", "".join(json.dumps(row) + "\n" for row in mixed))
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "old.jsonl")
    before = sorted(path.name for path in tmp_path.iterdir())
    with pytest.raises(UserError, match=problem):
        predict.main([arg.format(dir=tmp_path) for arg in args] + ["--model-dir", str(model_folder)], TASK)
    assert sorted(path.name for path in tmp_path.iterdir()) == before, "nothing written"
