"""Rows in and out of .jsonl, .json, .csv, .parquet and plain-text files, with line numbers.

`read_table` keeps where each row came from ("line 7", "row 7"), so a bad row is named in
the error; `write_table` writes atomically (a temporary file renamed into place), so an
error or Ctrl-C never leaves half a file. No torch here.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from src.errors import UserError
from src.runs import atomic_path

STDIN = "-"
# Suffix -> kind. Plain text is one text per line; stdin is read as plain text.
KINDS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
SUPPORTED = ".jsonl, .json, .csv, .parquet or .txt (one text per line)"


class TableError(UserError):
    """An input or output file is unusable; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Table:
    source: str  # the path as given, or "stdin"
    kind: str
    rows: list[dict[str, Any]]
    places: list[str]  # where each row is in the file: "line 7" or "row 7"
    columns: list[str]  # the header (csv, parquet) or the keys seen (json)


def kind_of(path: Path, flag: str) -> str:
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise TableError(f"{flag} {path}: unknown file type {path.suffix or '(none)'!r}: use {SUPPORTED}")
    return kind


def read_table(name: str, flag: str = "INPUT") -> Table:
    """Read every row of `name` (a path, or "-" for plain text on stdin)."""
    if name == STDIN:
        return _parse(sys.stdin.buffer.read(), "stdin", "text")
    path = Path(name)
    kind = kind_of(path, flag)
    if path.is_dir():
        raise TableError(f"{flag} {path} is a folder: give a file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TableError(f"{flag} {path} does not exist") from None
    except OSError as error:
        raise TableError(f"{flag} {path}: cannot read it ({error.strerror})") from None
    return _parse(data, name, kind)


def _parse(data: bytes, source: str, kind: str) -> Table:
    if not data.strip():
        raise TableError(f"{source} is empty: no rows to answer")
    if kind == "parquet":
        return _parquet(data, source)
    try:
        text = data.decode("utf-8-sig")  # a BOM, as Excel writes, is not part of the first text
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise TableError(f"{source} line {line}: not UTF-8 text (byte {error.start}): save the file as UTF-8") from None
    if kind == "csv":
        return _csv(text, source)
    if kind == "json" and text.lstrip().startswith("["):
        return _json_array(text, source)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    lines = [line.removesuffix("\r") for line in lines]
    places = [f"line {number}" for number in range(1, len(lines) + 1)]
    if kind == "text":
        return Table(source, kind, [{"text": line} for line in lines], places, ["text"])
    rows = [_json_object(line, source, place) for line, place in zip(lines, places, strict=True)]
    return Table(source, "jsonl", rows, places, _keys(rows))


def _json_object(line: str, source: str, place: str) -> dict[str, Any]:
    if not line.strip():
        raise TableError(f"{source} {place} is empty: every line must be a JSON object with a text")
    try:
        value = json.loads(line)
    except RecursionError:
        raise TableError(
            f"{source} {place}: nested deeper than JSON can be read here: one flat object per line"
        ) from None
    except ValueError as error:
        raise TableError(f"{source} {place}: not valid JSON ({error}): one JSON object per line") from None
    if not isinstance(value, dict):
        raise TableError(
            f'{source} {place}: expected a JSON object such as {{"text": ...}}, got {type(value).__name__}'
        )
    return value


def _json_array(text: str, source: str) -> Table:
    try:
        values = json.loads(text)
    except RecursionError:
        raise TableError(f"{source}: nested deeper than JSON can be read here") from None
    except ValueError as error:
        raise TableError(f"{source}: not valid JSON ({error})") from None
    places = [f"item {number}" for number in range(1, len(values) + 1)]
    rows = []
    for value, place in zip(values, places, strict=True):
        if not isinstance(value, dict):
            raise TableError(f'{source} {place}: expected a JSON object such as {{"text": ...}}')
        rows.append(value)
    return Table(source, "json", rows, places, _keys(rows))


def _keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _csv(text: str, source: str) -> Table:
    csv.field_size_limit(2**31 - 1)  # a long review is no reason to stop (the default is 128 KiB)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows, places = [], []
    try:
        columns = list(reader.fieldnames or [])  # reads the header line
        twice = sorted({name for name in columns if columns.count(name) > 1})
        if twice:
            raise TableError(f"{source} line 1: column {twice[0]!r} appears twice in the header: rename one")
        while True:
            first_line = reader.line_num + 1  # a quoted field may span lines: name where the row starts
            try:
                row = next(reader)
            except StopIteration:
                break
            if None in row:
                raise TableError(f"{source} line {first_line}: more fields than the header has (a stray comma?)")
            rows.append(dict(row))
            places.append(f"line {first_line}")
    except csv.Error as error:
        raise TableError(f"{source} line {reader.line_num}: not valid CSV ({error})") from None
    return Table(source, "csv", rows, places, columns)


def _parquet(data: bytes, source: str) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as error:
        raise TableError(f"{source}: not a readable Parquet file ({error})"[:300]) from None
    rows = table.to_pylist()
    return Table(source, "parquet", rows, [f"row {number}" for number in range(1, len(rows) + 1)], table.column_names)


def texts(table: Table, column: str, flag: str = "--text-column") -> list[str]:
    """The text of every row; a row without one stops with its line."""
    if not table.rows:
        raise TableError(f"{table.source} has no rows, only a header: nothing to answer")
    if table.kind in {"csv", "parquet"} and column not in table.columns:
        raise TableError(f"{table.source}: no column {column!r} (it has {table.columns}): pass {flag} NAME")
    found = []
    for row, place in zip(table.rows, table.places, strict=True):
        value = row.get(column)
        if table.kind == "text" and not str(value).strip():
            raise TableError(f"{table.source} {place} is empty: one text per line (remove the blank line)")
        if not isinstance(value, str) or not value.strip():
            problem = "missing" if value is None else "empty" if isinstance(value, str) else f"not text ({value!r:.40})"
            hint = "" if column in row or table.kind == "text" else f" (the row has {sorted(row)[:8]}: pass {flag}?)"
            raise TableError(f"{table.source} {place}: no text in {column!r}: {problem}{hint}")
        found.append(valid_unicode(value, f"{table.source} {place}: the text in {column!r}"))
    return found


def valid_unicode(text: str, what: str) -> str:
    """`text`, unless it holds a lone surrogate such as \\ud800 (JSON allows one; no tokenizer or file takes it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # the server refuses it too (422)
        raise TableError(
            f"{what} is not valid Unicode (a lone surrogate such as \\ud800): fix or remove the row"
        ) from None
    return text


def check_parquet(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Parquet holds one type per column: say which column mixes types before any answer is computed."""
    import pyarrow as pa

    try:
        pa.Table.from_pylist(list(rows))
    except (pa.ArrowException, TypeError, ValueError):
        for column in _keys(rows):
            try:
                pa.array([row.get(column) for row in rows])
            except (pa.ArrowException, TypeError, ValueError) as error:
                kind = type(error).__name__
                raise TableError(f"-o {path}: column {column!r} mixes kinds of values, which parquet cannot hold "
                                 f"({kind}): write .jsonl or .json, or fix the column") from None  # fmt: skip
        raise TableError(f"-o {path}: the rows cannot be written as parquet: write .jsonl or .json") from None


def write_table(rows: Sequence[dict[str, Any]], path: Path | None, kind: str) -> None:
    """Write `rows` to `path` atomically (None: stdout, as JSON lines)."""
    if path is None:
        _write(rows, sys.stdout, "jsonl")
        sys.stdout.flush()
        return
    with atomic_path(path) as temporary:
        if kind == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(list(rows)), temporary)
        else:
            with temporary.open("w", encoding="utf-8", newline="") as handle:
                _write(rows, handle, kind)
                handle.flush()
                os.fsync(handle.fileno())


def _write(rows: Sequence[dict[str, Any]], handle: IO[str], kind: str) -> None:
    if kind == "csv":
        writer = csv.DictWriter(handle, fieldnames=_keys(rows))
        writer.writeheader()
        writer.writerows(rows)
    elif kind == "json":
        json.dump(list(rows), handle, ensure_ascii=False, indent=1)
        handle.write("\n")
    else:  # jsonl, and plain-text input (its output needs the predictions beside each text)
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
