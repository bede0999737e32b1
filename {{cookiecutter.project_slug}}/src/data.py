"""Load the train/eval splits (Hub or local files) and tokenise them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset
from transformers import PreTrainedTokenizerBase

from src.config import DataSettings
from src.errors import UserError

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


class DataError(UserError):
    """The dataset settings point at something unusable; the message says what."""


def _local_format(files: list[Path]) -> str:
    formats = {LOCAL_FORMATS.get(file.suffix.lower()) for file in files}
    if None in formats or len(formats) != 1:
        names = ", ".join(str(file) for file in files)
        raise DataError(f"data.train_file/eval_file ({names}): use one format of .json, .jsonl, .csv or .parquet")
    return str(formats.pop())


def load_splits(data: DataSettings) -> DatasetDict:
    """Return {"train", "eval"} with the text and label columns: shuffled with a fixed seed, then cut to
    max_train_samples / max_eval_samples (the same examples in every run, whatever training.seed is)."""
    if data.dataset is None:
        if data.train_file is None or data.eval_file is None:
            raise DataError("data.dataset is null: set both data.train_file and data.eval_file")
        for file in (data.train_file, data.eval_file):
            if not file.is_file():
                raise DataError(f"data file {file} does not exist: fix data.train_file/eval_file")
        files = {"train": str(data.train_file), "eval": str(data.eval_file)}
        fmt = _local_format([data.train_file, data.eval_file])
        try:
            loaded = load_dataset(fmt, data_files=files)
        except Exception as error:  # datasets raises many types for unreadable files
            raise DataError(f"cannot read {data.train_file} / {data.eval_file} as {fmt}: {error}"[:500]) from None
        splits = {"train": loaded["train"], "eval": loaded["eval"]}
    else:
        loaded = load_dataset(data.dataset)
        for split in (data.train_split, data.eval_split):
            if split not in loaded:
                raise DataError(
                    f"dataset {data.dataset!r} has no split {split!r} (it has {sorted(loaded)}):"
                    " fix data.train_split/eval_split"
                )
        splits = {"train": loaded[data.train_split], "eval": loaded[data.eval_split]}
    for name, split in splits.items():
        missing = {data.text_column, data.label_column} - set(split.column_names)
        if missing:
            raise DataError(
                f"{name} split lacks column(s) {sorted(missing)} (has {split.column_names}):"
                " fix data.text_column/label_column"
            )
    if data.dataset is None:
        splits = {name: _typed(split, data, name) for name, split in splits.items()}
    return DatasetDict(
        {
            "train": _subset(splits["train"], data.max_train_samples),
            "eval": _subset(splits["eval"], data.max_eval_samples),
        }
    )


def _typed(split: Dataset, data: DataSettings, name: str) -> Dataset:
    """Text as strings, labels as data.labels (given as names or as 0-based numbers)."""
    features = Features({data.text_column: Value("string"), data.label_column: ClassLabel(names=data.labels)})
    try:
        return split.select_columns([data.text_column, data.label_column]).cast(features)
    except (ValueError, TypeError, KeyError) as error:
        raise DataError(
            f"{name} file: cannot read column {data.label_column!r} as one of {data.labels} "
            f"(or 0-{len(data.labels) - 1}), and {data.text_column!r} as text: {error}"[:500]
        ) from None


def _subset(split: Dataset, limit: int | None) -> Dataset:
    # Shuffle first: Hub datasets such as imdb are sorted by label. A fixed seed, not training.seed:
    # runs with different seeds train and evaluate on the same subset, so they compare.
    split = split.shuffle(seed=0)
    return split.select(range(min(limit, len(split)))) if limit is not None else split


def tokenize(
    splits: DatasetDict, tokenizer: PreTrainedTokenizerBase, data: DataSettings, max_length: int
) -> DatasetDict:
    """Truncate to max_length; padding happens per batch in the collator (dynamic padding)."""

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        encoded = tokenizer(batch[data.text_column], truncation=True, max_length=max_length)
        encoded["labels"] = batch[data.label_column]
        return dict(encoded)

    columns = splits["train"].column_names
    return splits.map(encode, batched=True, remove_columns=columns, desc="Tokenizing")


def label_names(split: Dataset, data: DataSettings) -> list[str]:
    """The names of a split's labels, in index order."""
    feature = split.features[data.label_column]
    return list(feature.names) if isinstance(feature, ClassLabel) else list(data.labels)
