"""Load the train/eval chats (Hub or local files) and check their turns.

Each example is a conversation: a list of {"role", "content"} turns (system, user,
assistant) ending with an assistant turn, the format TRL's SFTTrainer and the tokenizer's
chat template take. Whatever data.messages_column is called, the splits come back with
that one column, named `messages`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datasets import Dataset, DatasetDict

from src.config import DataSettings
from src.splits import DataError, read, subset

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
MESSAGES = "messages"
ROLES = ("system", "user", "assistant")
SHOWN = 3  # bad rows named in an error
MAX_CHARACTERS = 1_000_000  # per conversation: past any context this template trains; tokenizing more costs GBs


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
    if (size := sum(len(turn["content"]) for turn in messages)) > MAX_CHARACTERS:
        return f"{size:,} characters, more than {MAX_CHARACTERS:,} (longer than a model's context: split it)"
    return None


def check_chats(split: Dataset, where: str) -> None:
    """Every conversation of a split as read (rows counted from 1, in the file's order), or one error naming them."""
    bad = []
    for index, messages in enumerate(split[MESSAGES]):
        problem = turns_problem(messages)
        if problem:
            bad.append(f"row {index + 1}: {problem}")
    if bad:
        shown = "; ".join(bad[:SHOWN]) + (f" (and {len(bad) - SHOWN} more)" if len(bad) > SHOWN else "")
        raise DataError(f"{where}: {len(bad)} of {len(split)} conversations are malformed: {shown}")


def load_splits(data: DataSettings) -> DatasetDict:
    """Return {"train", "eval"} with one `messages` column, the same examples in every run (src/splits.py)."""
    chosen = {}
    for name, split in read(data, LOCAL_FORMATS).items():
        if data.messages_column not in split.column_names:
            raise DataError(
                f"{name} split lacks column {data.messages_column!r} (has {split.column_names}):"
                " fix data.messages_column"
            )
        split = split.select_columns([data.messages_column])
        if data.messages_column != MESSAGES:
            split = split.rename_column(data.messages_column, MESSAGES)
        file = data.train_file if name == "train" else data.eval_file
        check_chats(split, f"data.{name}_file {file}" if data.dataset is None else f"dataset {data.dataset} ({name})")
        chosen[name] = subset(split, name, data)
    return DatasetDict(chosen)


def prompt_of(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A conversation without its last assistant turn: what the model is asked to continue."""
    return list(messages[:-1]) if messages and messages[-1].get("role") == "assistant" else list(messages)
