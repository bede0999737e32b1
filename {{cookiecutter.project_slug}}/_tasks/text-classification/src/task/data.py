"""A classifier's splits: the text and label columns, labels typed by data.labels; tokenising them."""

from __future__ import annotations

from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from transformers import PreTrainedTokenizerBase

from src.config import DataSettings
from src.splits import DataError, read, subset

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def load_splits(data: DataSettings) -> DatasetDict:
    """Return {"train", "eval"} with the text and label columns, the same examples in every run (src/splits.py)."""
    splits = read(data, LOCAL_FORMATS)
    for name, split in splits.items():
        missing = {data.text_column, data.label_column} - set(split.column_names)
        if missing:
            raise DataError(
                f"{name} split lacks column(s) {sorted(missing)} (has {split.column_names}):"
                " fix data.text_column/label_column"
            )
    if data.dataset is None:
        splits = {name: _typed(split, data, name) for name, split in splits.items()}
    return DatasetDict({name: subset(split, name, data) for name, split in splits.items()})


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
