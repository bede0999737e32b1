"""`uv run predict INPUT [-o OUTPUT]`: the served model's answer for every row of a file, without a server.

INPUT is .jsonl, .json, .csv, .parquet or plain text (one row per line; `-` reads plain text
from stdin). Every row comes back with the task's answer columns (a label and probabilities, a
completion) beside its own, in the input's format (plain text becomes JSON lines). The default
OUTPUT is `<input>.<answers>.<ext>` beside the input (stdout for stdin). The model is the
server's (serving.model_dir or --model-dir, found as every command finds it, checked as serve
checks it), run as the server's worker runs it. Everything is read and checked before the model
loads, and the output is written only at the end, through a temporary file: an error or Ctrl-C
leaves no half file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src import model_folder, tables
from src.contract import Task
from src.errors import UserError
from src.settings import load_settings


def output_path(
    input_name: str, kind: str, output: str | None, force: bool = False, suffix: str = "predictions"
) -> tuple[Path | None, str]:
    """Where the answers go (default `<input>.<suffix>.<ext>`) and in which format; checked before any work is done.

    Nothing is replaced without a word: not the input, not a symlink, and an existing file only
    with --force.
    """
    if output == tables.STDIN or (output is None and input_name == tables.STDIN):
        return None, "jsonl"
    if output is None:
        source = Path(input_name)
        extension = ".jsonl" if kind == "text" else source.suffix
        path = source.with_name(f"{source.stem}.{suffix}{extension}")
    else:
        path = Path(output)
        if path.is_dir():
            raise UserError(f"-o {path} is a folder: give a file name such as {path / 'predictions.jsonl'}")
    if path.is_symlink():
        raise UserError(f"-o {path} is a symbolic link: write to the file itself ({path.resolve()}) or elsewhere")
    if input_name != tables.STDIN and path.resolve() == Path(input_name).resolve():
        raise UserError(f"-o {path} is the input file: {suffix} never replace their input; choose another name")
    if path.exists() and not force:
        raise UserError(f"{path} exists: pass --force to replace it, or -o another file")
    out_kind = tables.kind_of(path, "-o")
    if out_kind == "text":
        raise UserError(f"-o {path}: plain text cannot hold the {suffix}: use .jsonl, .json, .csv or .parquet")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"-o {path}: folder {folder} does not exist: create it or choose another place")
    if not os.access(folder, os.W_OK):
        raise UserError(f"-o {path}: cannot write into {folder}: choose another place")
    return path, out_kind


def main(argv: Sequence[str], task: Task[Any]) -> int:
    prediction = task.prediction
    args = prediction.command.parse(argv)
    serving = load_settings(task.settings, flags=prediction.command.settings_flags(args)).serving
    model_dir = model_folder.resolve(serving.model_dir, task.model_files)
    table = tables.read_table(args.input)
    destination, out_kind = output_path(args.input, table.kind, args.output, args.force, prediction.suffix)
    if out_kind == "parquet" and destination is not None:
        tables.check_parquet(table.rows, destination)  # the input's columns go out beside the answers
    inputs = prediction.inputs(table, model_dir, args)
    folder = task.inspect(model_dir)  # serve's own start-up check: no transformers traceback, no wrong answers
    if clash := sorted(set(prediction.columns(folder)) & set(table.columns)):
        raise UserError(
            f"{table.source}: column {clash[0]!r} would be overwritten by the {prediction.suffix}: rename it"
        )
    rows = prediction.run()(folder, serving, args, inputs, table)  # the model loads only now
    tables.write_table(rows, destination, out_kind)
    print(f"Wrote {len(rows)} {prediction.suffix} to {destination or 'stdout'}", file=sys.stderr)
    return 0
