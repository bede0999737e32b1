"""`uv run predict INPUT [-o OUTPUT]`: classify a file of texts without starting a server.

INPUT is .jsonl, .json, .csv, .parquet or plain text (one text per line; `-` reads plain text
from stdin). Every row comes back with `predicted_label`, `predicted_score` and one
`probability_<label>` per label beside its own columns, in the input's format (plain text
becomes JSON lines). The default OUTPUT is `<input>.predictions.<ext>` beside the input
(stdout for stdin). The model, precision and runtime are the server's (serving.model_dir,
serving.precision and serving.runtime, or --model-dir, --precision and --runtime), run by the
server's own classifier in length-sorted batches on the best device: on CPU, int8 through
ONNX Runtime, exported and checked against PyTorch as `uv run serve` does.
Everything is read and checked before the model loads, and the output is written only at
the end, through a temporary file: an error or Ctrl-C leaves no half file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from src import errors, flags, runs
from src.config import load_settings
from src.devices import best_device
from src.errors import UserError
from src.evaluation import tables
from src.model_folder import inspect_model_folder
from src.runs import section, stored_settings

PREDICTED = ("predicted_label", "predicted_score")  # and one probability_<label> per label


def output_path(input_name: str, kind: str, output: str | None, force: bool = False) -> tuple[Path | None, str]:
    """Where the predictions go and in which format; checked before any work is done.

    Nothing is replaced without a word: not the input, not a symlink, and an existing file only
    with --force.
    """
    if output == tables.STDIN or (output is None and input_name == tables.STDIN):
        return None, "jsonl"
    if output is None:
        source = Path(input_name)
        suffix = ".jsonl" if kind == "text" else source.suffix
        path = source.with_name(f"{source.stem}.predictions{suffix}")
    else:
        path = Path(output)
        if path.is_dir():
            raise UserError(f"-o {path} is a folder: give a file name such as {path / 'predictions.jsonl'}")
    if path.is_symlink():
        raise UserError(f"-o {path} is a symbolic link: write to the file itself ({path.resolve()}) or elsewhere")
    if input_name != tables.STDIN and path.resolve() == Path(input_name).resolve():
        raise UserError(f"-o {path} is the input file: predictions never replace their input; choose another name")
    if path.exists() and not force:
        raise UserError(f"{path} exists: pass --force to replace it, or -o another file")
    out_kind = tables.kind_of(path, "-o")
    if out_kind == "text":
        raise UserError(f"-o {path}: plain text cannot hold the predictions: use .jsonl, .json, .csv or .parquet")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"-o {path}: folder {folder} does not exist: create it or choose another place")
    if not os.access(folder, os.W_OK):
        raise UserError(f"-o {path}: cannot write into {folder}: choose another place")
    return path, out_kind


def main(argv: Sequence[str] | None = None) -> int:
    args = flags.PREDICT.parse(sys.argv[1:] if argv is None else argv)
    serving = load_settings(flags=flags.PREDICT.settings_flags(args)).serving
    model_dir = runs.resolve_model_dir(serving.model_dir)
    column = args.text_column or section(stored_settings(model_dir), "data").get("text_column") or "text"
    table = tables.read_table(args.input)
    destination, out_kind = output_path(args.input, table.kind, args.output, args.force)
    texts = tables.texts(table, "text" if table.kind == "text" else column)
    model = inspect_model_folder(model_dir)  # serve's own start-up check: no transformers traceback, no wrong answers
    added = {*PREDICTED, *(f"probability_{label}" for label in model.labels)}
    if clash := sorted(added & set(table.columns)):
        raise UserError(f"{table.source}: column {clash[0]!r} would be overwritten by the predictions: rename it")

    from src.evaluation import inference  # torch: only once the input is known to be good

    device = best_device()
    classifier = inference.load(model_dir, serving.precision, device, serving.runtime)  # as the server runs it
    print(f"Classifying {len(texts)} texts from {table.source} with {model_dir} "
          f"({classifier.runtime} {classifier.precision} on {device})", file=sys.stderr, flush=True)  # fmt: skip
    predictions = inference.classify(classifier, texts)
    rows = [
        {
            **row,
            "predicted_label": prediction.label,
            "predicted_score": prediction.score,
            **{f"probability_{label}": value for label, value in prediction.probabilities.items()},
        }
        for row, prediction in zip(table.rows, predictions, strict=True)
    ]
    tables.write_table(rows, destination, out_kind)
    print(f"Wrote {len(rows)} predictions to {destination or 'stdout'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    errors.run(main)
