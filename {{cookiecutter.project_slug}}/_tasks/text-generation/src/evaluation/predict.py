"""`uv run predict INPUT [-o OUTPUT]`: a completion for each prompt in a file, without a server.

INPUT holds one prompt per row: .jsonl/.json/.parquet rows with `messages` (a conversation
as the server takes it: {"role", "content"} turns) or `prompt` (one user turn), or plain
text (one prompt per line; `-` reads plain text from stdin). Every row comes back with
`completion`, `finish_reason` and `completion_tokens` beside its own columns, in the input's
format (plain text becomes JSON lines). The default OUTPUT is `<input>.completions.<ext>`
beside the input (stdout for stdin). The model and precision are the server's
(serving.model_dir and serving.precision, or --model-dir and --precision), run by the
server's own generator; --max-tokens (serving.default_max_tokens) caps each completion and
--temperature 0 (the default) makes them reproducible. Everything is read and checked before
the model loads, a progress bar counts the prompts, and the output is written only at the
end, through a temporary file: an error or Ctrl-C leaves no half file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from src import errors, flags, runs
from src.config import load_settings
from src.devices import best_device
from src.errors import UserError
from src.evaluation import tables
from src.model_folder import inspect_model_folder

ADDED = ("completion", "finish_reason", "completion_tokens")
ROLES = ("system", "user", "assistant")


def conversations(table: tables.Table) -> list[list[dict[str, str]]]:
    """Each row's conversation: its `messages`, or its `prompt` (or line) as one user turn; a bad row is named."""
    if not table.rows:
        raise tables.TableError(f"{table.source} has no rows: nothing to complete")
    found = []
    for row, place in zip(table.rows, table.places, strict=True):
        where = f"{table.source} {place}"
        if table.kind == "text" or ("prompt" in row and "messages" not in row):
            text = row.get("text") if table.kind == "text" else row.get("prompt")
            if not isinstance(text, str) or not text.strip():
                raise tables.TableError(f"{where}: the prompt is empty or not text: give some words")
            found.append([{"role": "user", "content": text}])
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
        found.append([{"role": turn["role"], "content": turn["content"]} for turn in messages])
    return found


def output_path(input_name: str, kind: str, output: str | None, force: bool = False) -> tuple[Path | None, str]:
    """Where the completions go and in which format; checked before any work is done.

    Nothing is replaced without a word: not the input, not a symlink, and an existing file only
    with --force.
    """
    if output == tables.STDIN or (output is None and input_name == tables.STDIN):
        return None, "jsonl"
    if output is None:
        source = Path(input_name)
        suffix = ".jsonl" if kind == "text" else source.suffix
        path = source.with_name(f"{source.stem}.completions{suffix}")
    else:
        path = Path(output)
        if path.is_dir():
            raise UserError(f"-o {path} is a folder: give a file name such as {path / 'predictions.jsonl'}")
    if path.is_symlink():
        raise UserError(f"-o {path} is a symbolic link: write to the file itself ({path.resolve()}) or elsewhere")
    if input_name != tables.STDIN and path.resolve() == Path(input_name).resolve():
        raise UserError(f"-o {path} is the input file: completions never replace their input; choose another name")
    if path.exists() and not force:
        raise UserError(f"{path} exists: pass --force to replace it, or -o another file")
    out_kind = tables.kind_of(path, "-o")
    if out_kind == "text":
        raise UserError(f"-o {path}: plain text cannot hold the completions: use .jsonl, .json, .csv or .parquet")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"-o {path}: folder {folder} does not exist: create it or choose another place")
    if not os.access(folder, os.W_OK):
        raise UserError(f"-o {path}: cannot write into {folder}: choose another place")
    return path, out_kind


def main(argv: Sequence[str] | None = None) -> int:
    args = flags.PREDICT.parse(sys.argv[1:] if argv is None else argv)
    if args.temperature < 0 or args.temperature > 2:
        raise UserError(f"--temperature {args.temperature:g}: use 0 to 2")
    serving = load_settings(flags=flags.PREDICT.settings_flags(args)).serving
    model_dir = runs.resolve_model_dir(serving.model_dir)
    table = tables.read_table(args.input)
    destination, out_kind = output_path(args.input, table.kind, args.output, args.force)
    prompts = conversations(table)
    model = inspect_model_folder(model_dir)  # serve's own start-up check: no transformers traceback
    if clash := sorted(set(ADDED) & set(table.columns)):
        raise UserError(f"{table.source}: column {clash[0]!r} would be overwritten by the completions: rename it")

    from src.deployment.generator import Generator  # torch: only once the input is known to be good

    device = best_device()
    generator = Generator(model, device, serving.precision)  # as the server runs it
    print(f"Completing {len(prompts)} prompts from {table.source} with {model_dir} "
          f"({generator.precision} on {device})", file=sys.stderr, flush=True)  # fmt: skip
    rows: list[dict[str, Any]] = []
    for row, messages in zip(table.rows, tqdm(prompts, desc="Completing", unit="prompt", file=sys.stderr),
                             strict=True):  # fmt: skip
        text, stream = generator.complete(messages, serving.default_max_tokens, args.temperature)
        rows.append({**row, "completion": text, "finish_reason": stream.finish_reason,
                     "completion_tokens": stream.completion_tokens})  # fmt: skip
    tables.write_table(rows, destination, out_kind)
    print(f"Wrote {len(rows)} completions to {destination or 'stdout'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    errors.run(main)
