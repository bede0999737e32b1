"""Which model folder a command uses, and the checks every task's start-up check is made of; no torch.

serve, serve-cloud, predict, evaluate and compare find a model the same way (`resolve`): a
folder, or a runs folder's `latest` pointer followed to its run (the newest finished run
when the pointer is gone), whose files must be the ones its run.json records (src/fingerprints.py:
a run changed or swapped since it was published is refused). The task's own check
(`Task.inspect`) then reads the folder as the server will load it, in the server's parent
process (which LitServe forks into its API servers, so torch and transformers must not be
imported there), and fails with one BadModelFolderError naming the file and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from src.errors import UserError
from src.fingerprints import sha256
from src.runs import LATEST, PRODUCTION, RUN_INFO, check_run_id, finished_runs, follow_latest
from src.weights import ModelFiles, nonfinite_tensor, weights_files, weights_problem


class ModelNotFoundError(UserError):
    """No finished model where one was expected; the message says how to make one."""


class BadModelFolderError(UserError):
    """The model folder cannot be loaded (to serve, predict or evaluate); the message names the file and the fix."""


def resolve(path: Path, files: ModelFiles) -> Path:
    """The model folder at `path`, following `latest`; if that pointer is gone, the newest finished run beside it.
    `production` where nothing was ever promoted is `latest` (a first smoke run serves at once)."""
    if path.name == PRODUCTION and not path.exists() and not path.is_symlink():
        path = path.parent / LATEST
    elif path.name == PRODUCTION and not (follow_latest(path) / files.config).is_file():
        raise ModelNotFoundError(f"{path} names run {follow_latest(path).name}, which is gone: promote another "
                                 "(`uv run promote RUN`) or go back (`uv run promote --rollback`)")  # fmt: skip
    folder = follow_latest(path)
    if path.name == LATEST and not (folder / files.config).is_file():  # gone, dangling or emptied
        newest = finished_runs(path.parent)
        if newest:
            folder = newest[0].resolve()
    if folder.is_file():
        raise ModelNotFoundError(f"{folder} is a file: give the folder that holds the saved model ({files.config})")
    if not (folder / files.config).is_file():
        raise ModelNotFoundError(
            f"no trained model at {folder}: run `uv run train-local` to fine-tune one "
            "(or `uv run train-local --smoke` for a tiny offline model), "
            "or point serving.model_dir / --model-dir at a saved model folder"
        )
    check_unchanged(folder)
    return folder


def check_unchanged(model_dir: Path) -> None:
    """A run's files as training published them (run.json's `files`); a folder without that record is taken as is."""
    recorded = run_info(model_dir).get("files")
    for name, digest in recorded.items() if isinstance(recorded, dict) else ():
        path = model_dir / name
        if not path.is_file() or sha256(path) != digest:
            how = "changed since" if path.is_file() else "missing: it was there when"
            raise BadModelFolderError(
                f"{path}: {how} the run was published (run.json records each file's sha256): a run folder stays as "
                "training wrote it, so that it answers as it did: restore the file, or train a new run"
            )


def find_run(output_dir: Path, name: str | None, files: ModelFiles) -> Path:
    """A finished run under `output_dir` by id (`latest` when None)."""
    if name is None or name == LATEST:
        return resolve(output_dir / LATEST, files)
    candidate = output_dir / check_run_id(name, "RUN")
    if not candidate.is_dir():
        known = ", ".join(path.name for path in finished_runs(output_dir)[:5]) or "none yet"
        raise ModelNotFoundError(f"no run {name!r} under {output_dir} (newest runs: {known})")
    return resolve(candidate, files)


def which(path: Path) -> str:
    """How serve names its choice on start: the promoted run, or the newest where nothing was promoted."""
    if path.name == PRODUCTION:
        promoted = path.exists() or path.is_symlink()
        return "the promoted run (models/production)" if promoted else "the newest run (nothing promoted yet)"
    return "the newest run" if path.name == LATEST else "the folder given"


def fail(path: Path, problem: str) -> BadModelFolderError:
    return BadModelFolderError(
        f"{path}: {problem}. The model folder is not a complete saved model: point --model-dir (or RUN) at "
        "what train-local publishes, or train a new one"
    )


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise fail(path, f"not readable JSON ({error})") from None


def run_info(model_dir: Path) -> dict[str, Any]:
    """The run's run.json ({} for a model folder that is not a run)."""
    if not (model_dir / RUN_INFO).is_file():
        return {}
    info = read_json(model_dir / RUN_INFO)
    if not isinstance(info, dict):
        raise fail(model_dir / RUN_INFO, "not a JSON object")
    return info


def check_weights(model_dir: Path, files: ModelFiles) -> None:
    """Complete weights (src/weights.py), and no NaN or infinity in them (a run whose training diverged)."""
    damaged = weights_problem(model_dir, files)
    if damaged:
        path, problem = damaged
        raise fail(path, f"{problem}: the weights are damaged or missing")
    for path in weights_files(model_dir, files):
        if path.suffix == ".safetensors" and (tensor := nonfinite_tensor(path)):
            raise fail(path, f"tensor {tensor!r} holds NaN or infinite values: these weights cannot answer")


def tokenizer_size(model_dir: Path) -> int:
    """How many tokens the folder's tokenizer.json knows (it must load: the Rust library reads it, no torch)."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise fail(model_dir, "no tokenizer.json: the run saves its tokenizer beside the model")
    from tokenizers import Tokenizer  # Rust, light: no torch

    try:
        return Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    except Exception as error:  # tokenizers raises bare Exceptions for malformed files
        raise fail(path, f"the tokenizer does not load ({str(error)[:200]})") from None


def tokenizer_limit(model_dir: Path) -> int | None:
    """The tokenizer's own length limit (tokenizer_config.json's model_max_length), when it states one."""
    path = model_dir / "tokenizer_config.json"
    config = read_json(path) if path.is_file() else {}
    if not isinstance(config, dict):
        raise fail(path, "not a JSON object")
    limit = config.get("model_max_length")
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None


def trained_max_length(run_info: dict[str, Any], tokenizer_limit: int | None, positions: int | None) -> int:
    """Where the run truncated when it trained (run.json), else the longest input the model takes."""
    recorded = run_info.get("max_length")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
        return recorded
    limits = [limit for limit in (tokenizer_limit, positions) if isinstance(limit, int) and limit > 0]
    return min(limits) if limits else 512
