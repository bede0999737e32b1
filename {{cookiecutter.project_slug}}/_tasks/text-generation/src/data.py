"""Load the train/eval chats (Hub or local files) and check their turns.

Each example is a conversation: a list of {"role", "content"} turns (system, user,
assistant) ending with an assistant turn, the format TRL's SFTTrainer and the tokenizer's
chat template take. Whatever data.messages_column is called, the splits come back with
that one column, named `messages`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset

from src.config import DataSettings
from src.errors import UserError

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
MESSAGES = "messages"
ROLES = ("system", "user", "assistant")
SHOWN = 3  # bad rows named in an error


class DataError(UserError):
    """The dataset settings point at something unusable; the message says what."""


def _local_format(files: list[Path]) -> str:
    formats = {LOCAL_FORMATS.get(file.suffix.lower()) for file in files}
    if None in formats or len(formats) != 1:
        names = ", ".join(str(file) for file in files)
        raise DataError(f"data.train_file/eval_file ({names}): use one format of .json, .jsonl or .parquet")
    return str(formats.pop())


def turns_problem(messages: object) -> str | None:
    """What is wrong with one conversation, or None: turns with a known role and text, the last the assistant's."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        return "not a non-empty list of turns"
    for index, turn in enumerate(messages):
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get("role"), str)
            or not isinstance(turn.get("content"), str)
        ):
            return f"turn {index} is not {{'role': ..., 'content': '...'}} with text content"
        if turn["role"] not in ROLES:
            return f"turn {index} has role {turn['role']!r} (use {', '.join(ROLES)})"
    if messages[-1]["role"] != "assistant":
        return "the last turn is not the assistant's (nothing to learn from)"
    return None


def check_chats(split: Dataset, name: str) -> None:
    bad = []
    for index, messages in enumerate(split[MESSAGES]):
        problem = turns_problem(messages)
        if problem:
            bad.append(f"row {index}: {problem}")
    if bad:
        shown = "; ".join(bad[:SHOWN]) + (f" (and {len(bad) - SHOWN} more)" if len(bad) > SHOWN else "")
        raise DataError(f"{name} split: {len(bad)} of {len(split)} conversations are malformed: {shown}")


def load_splits(data: DataSettings) -> DatasetDict:
    """Return {"train", "eval"} with one `messages` column: shuffled with a fixed seed, then cut to
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
    chosen = {}
    for name, split in splits.items():
        if data.messages_column not in split.column_names:
            raise DataError(
                f"{name} split lacks column {data.messages_column!r} (has {split.column_names}):"
                " fix data.messages_column"
            )
        split = split.select_columns([data.messages_column])
        if data.messages_column != MESSAGES:
            split = split.rename_column(data.messages_column, MESSAGES)
        limit = data.max_train_samples if name == "train" else data.max_eval_samples
        split = _subset(split, limit)
        check_chats(split, name)
        chosen[name] = split
    return DatasetDict(chosen)


def _subset(split: Dataset, limit: int | None) -> Dataset:
    # A fixed seed, not training.seed: runs with different seeds train and evaluate on the same
    # subset, so they compare.
    split = split.shuffle(seed=0)
    return split.select(range(min(limit, len(split)))) if limit is not None else split


def prompt_of(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A conversation without its last assistant turn: what the model is asked to continue."""
    return list(messages[:-1]) if messages and messages[-1].get("role") == "assistant" else list(messages)
