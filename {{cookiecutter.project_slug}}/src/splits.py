"""The train and eval splits, from the Hub or from local files, cut the same way in every run.

A task reads its own columns from what `read` returns and cuts each split with `subset`: shuffled
with a fixed seed (Hub datasets such as imdb are sorted by label), then to data.max_train_samples
and data.max_eval_samples, so runs with different training.seed values train and evaluate on
the same examples and compare.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from datasets import Dataset, load_dataset

from src.errors import UserError
from src.settings import DataSettings

SPLITS = ("train", "eval")


class DataError(UserError):
    """The dataset settings point at something unusable; the message says what."""


def _local_format(files: list[Path], formats: Mapping[str, str]) -> str:
    found = {formats.get(file.suffix.lower()) for file in files}
    if None in found or len(found) != 1:
        names = ", ".join(str(file) for file in files)
        raise DataError(f"data.train_file/eval_file ({names}): use one format of {', '.join(formats)}")
    return str(found.pop())


def read(data: DataSettings, formats: Mapping[str, str]) -> dict[str, Dataset]:
    """{"train", "eval"} as stored: data.dataset's two splits, or data.train_file and data.eval_file
    (`formats` maps the suffixes a task reads to `datasets`' loaders: {".jsonl": "json", ...})."""
    if data.dataset is not None:
        loaded = load_dataset(data.dataset)
        for split in (data.train_split, data.eval_split):
            if split not in loaded:
                raise DataError(
                    f"dataset {data.dataset!r} has no split {split!r} (it has {sorted(loaded)}):"
                    " fix data.train_split/eval_split"
                )
        return {"train": loaded[data.train_split], "eval": loaded[data.eval_split]}
    if data.train_file is None or data.eval_file is None:
        raise DataError("data.dataset is null: set both data.train_file and data.eval_file")
    for file in (data.train_file, data.eval_file):
        if not file.is_file():
            raise DataError(f"data file {file} does not exist: fix data.train_file/eval_file")
    kind = _local_format([data.train_file, data.eval_file], formats)
    for setting, file in (("data.train_file", data.train_file), ("data.eval_file", data.eval_file)):
        if file.suffix.lower() == ".jsonl":
            check_json_lines(setting, file)
    try:
        loaded = load_dataset(kind, data_files={"train": str(data.train_file), "eval": str(data.eval_file)})
    except Exception as error:  # datasets raises many types for unreadable files
        raise DataError(f"cannot read {data.train_file} / {data.eval_file} as {kind}: {error}"[:500]) from None
    return {"train": loaded["train"], "eval": loaded["eval"]}


def check_json_lines(setting: str, path: Path) -> None:
    """Every line of a .jsonl file is one JSON object (datasets' own error names neither the file nor the line)."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip(b"\r\n"))
            except (ValueError, RecursionError) as error:  # RecursionError: nested deeper than Python parses
                problem = {json.JSONDecodeError: getattr(error, "msg", ""), UnicodeDecodeError: "not UTF-8 text"}.get(
                    type(error), "nested deeper than JSON can be read here"
                )
                raise DataError(f"{setting} {path}, line {number}: {problem}: fix or remove that line") from None
            if not isinstance(row, dict):
                raise DataError(f"{setting} {path}, line {number}: a JSON {type(row).__name__}, not an object")


def subset(split: Dataset, name: str, data: DataSettings) -> Dataset:
    """Shuffled with a fixed seed (not training.seed), then cut to max_train_samples or max_eval_samples."""
    limit = data.max_train_samples if name == "train" else data.max_eval_samples
    split = split.shuffle(seed=0)
    return split.select(range(min(limit, len(split)))) if limit is not None else split
