"""`uv run predict INPUT`: a completion for each prompt in a file, without a server.

INPUT holds one prompt per row: .jsonl/.json/.parquet rows with `messages` (a conversation
as the server takes it: {"role", "content"} turns) or `prompt` (one user turn), or plain
text (one prompt per line; `-` reads plain text from stdin). Every row comes back with
`completion`, `finish_reason` and `completion_tokens` beside its own columns. The model and
precision are the server's, run by the server's own generator; --max-tokens
(serving.default_max_tokens) caps each completion and --temperature 0 (the default) makes them
reproducible. src/evaluation/predict.py reads and checks everything before the model loads, and
writes the output only at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from src import tables
from src.devices import best_device
from src.errors import UserError
from src.task.folder import RunFolder

ADDED = ("completion", "finish_reason", "completion_tokens")
ROLES = ("system", "user", "assistant")


def conversations(table: tables.Table, model_dir: Path, args: argparse.Namespace) -> list[list[dict[str, str]]]:
    """Each row's conversation: its `messages`, or its `prompt` (or line) as one user turn; a bad row is named
    (and a --temperature it cannot be answered with)."""
    if not 0 <= args.temperature <= 2:
        raise UserError(f"--temperature {args.temperature:g}: use 0 to 2")
    if not table.rows:
        raise tables.TableError(f"{table.source} has no rows: nothing to complete")
    found = []
    for row, place in zip(table.rows, table.places, strict=True):
        where = f"{table.source} {place}"
        if table.kind == "text" or ("prompt" in row and "messages" not in row):
            text = row.get("text") if table.kind == "text" else row.get("prompt")
            if not isinstance(text, str) or not text.strip():
                raise tables.TableError(f"{where}: the prompt is empty or not text: give some words")
            found.append([{"role": "user", "content": tables.valid_unicode(text, f"{where}: the prompt")}])
            continue
        messages = row.get("messages")
        if messages is None:
            raise tables.TableError(f"{where}: no 'messages' or 'prompt' (the row has {sorted(row)[:8]})")
        if not isinstance(messages, list) or not messages:
            raise tables.TableError(f"{where}: 'messages' must be a non-empty list of turns")
        for index, turn in enumerate(messages):
            if not (isinstance(turn, dict) and turn.get("role") in ROLES and isinstance(turn.get("content"), str)):
                raise tables.TableError(
                    f'{where}: turn {index} must be {{"role": one of {", ".join(ROLES)}, "content": text}}'
                )
        found.append([{"role": turn["role"], "content": tables.valid_unicode(turn["content"], f"{where}: turn {index}")}
                      for index, turn in enumerate(messages)])  # fmt: skip
    return found


def complete_rows(
    folder: RunFolder, serving: Any, args: argparse.Namespace, prompts: list[list[dict[str, str]]], table: tables.Table
) -> list[dict[str, Any]]:
    """Each row of `table` with its completion, why it ended and how many tokens it took: the prompts decoded side
    by side by the server's engine (serving.max_sequences at a time), the rows in their order."""
    from src.task.generator import open_engine  # torch: only once the input is known to be good

    device = best_device()
    engine = open_engine(folder, serving, device)  # as the server runs it
    print(f"Completing {len(prompts)} prompts from {table.source} with {folder.path} ({engine.model.dtype} on "
          f"{device}, {engine.max_sequences} at a time)", file=sys.stderr, flush=True)  # fmt: skip
    try:
        with tqdm(total=len(prompts), desc="Completing", unit="prompt", file=sys.stderr) as progress:
            answers = engine.complete_all(prompts, serving.default_max_tokens, args.temperature,
                                          finished=lambda: progress.update(1))  # fmt: skip
    finally:
        engine.close()
    return [
        {**row, "completion": text, "finish_reason": last.finish_reason, "completion_tokens": last.completion_tokens}
        for row, (text, last) in zip(table.rows, answers, strict=True)
    ]
