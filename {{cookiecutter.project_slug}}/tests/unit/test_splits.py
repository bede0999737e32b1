"""A local .jsonl file is checked line by line before `datasets` reads it: the error names the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.splits import DataError, check_json_lines


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        pytest.param(b'{"text": "cut short', "Unterminated string", id="cut-short"),
        pytest.param(b'{"text": "a"} trailing', "Extra data", id="two-values-on-a-line"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested deeper than JSON", id="nested-deeper-than-python-reads"),
        pytest.param(b'{"text": "caf\xc3("}', "not UTF-8 text", id="not-utf-8"),
        pytest.param(b'["a", "list"]', "a JSON list, not an object", id="not-an-object"),
    ],
)
def test_a_bad_line_is_named_with_its_file(tmp_path: Path, line: bytes, problem: str) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"text": "fine"}\n\n' + line + b'\n{"text": "fine"}\n')
    with pytest.raises(DataError, match=rf"data.train_file {path}, line 3: .*{problem}"):
        check_json_lines("data.train_file", path)


def test_good_lines_pass(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "one"}\n\n{"text": "two"}\n')
    check_json_lines("data.train_file", path)
