"""What complete weights are: the one check that training's resume and serving's start-up share.

A task says what its saved model is made of (ModelFiles: a config file and its weights files,
by preference): a transformers model saves `config.json` and `model.safetensors` (or shards
listed in an index) or a torch zip archive (`pytorch_model.bin`); a Trainer checkpoint adds the
optimizer and scheduler state and, written last, trainer_state.json. The completeness checks
read headers and archive indices, never the tensors, and import no torch: a second or so on a
real-size model. Each returns None when the file (or folder) is complete, else what is wrong
with it. `nonfinite_tensor` reads a safetensors file's values (numpy, memory-mapped) for NaN
and infinities: what a run whose training diverged publishes.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from src.fingerprints import sha256
from src.runs import TRAINER_STATE

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_WEIGHTS = "pytorch_model.bin"
CHECKPOINT_FILES = ("optimizer.pt", "scheduler.pt")
INDEX_SUFFIX = ".index.json"  # an index lists the shards of the weights (its weight_map)
CHECKPOINT_MANIFEST = "checkpoint_files.json"  # sha256 of a checkpoint's files, written once the Trainer saved it


@dataclass(frozen=True)
class ModelFiles:
    """What a saved model is made of: its config file, and its weights (the first one present counts)."""

    config: str
    weights: tuple[str, ...]


SAVED_MODEL = ModelFiles("config.json", (SAFETENSORS, SAFETENSORS_INDEX, PYTORCH_WEIGHTS))
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
FLOATS = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}


def safetensors_header(path: Path) -> tuple[int, dict[str, object]] | str:
    """(where the tensors begin, the header) of a safetensors file, or what is wrong with its header."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            (header_bytes,) = struct.unpack("<Q", handle.read(8).ljust(8, b"\0"))
            if not 2 <= header_bytes <= min(MAX_HEADER_BYTES, size - 8):
                return "not a safetensors file (bad header length)"
            header = json.loads(handle.read(header_bytes))
    except (OSError, UnicodeDecodeError, ValueError):
        return "unreadable safetensors header"
    if not isinstance(header, dict):
        return "unreadable safetensors header"
    return 8 + header_bytes, {name: value for name, value in header.items() if name != "__metadata__"}


def safetensors_problem(path: Path) -> str | None:
    """Every tensor the header lists has its declared size and lies inside the file, which ends with the last."""
    read = safetensors_header(path)
    if isinstance(read, str):
        return read
    start, header = read
    end = 0
    for name, tensor in header.items():
        try:
            begin, stop = tensor["data_offsets"]  # type: ignore[index]
            expected = math.prod(tensor["shape"]) * DTYPE_BYTES[tensor["dtype"]]  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            return f"tensor {name!r} is described wrongly"
        if not 0 <= begin <= stop or stop - begin != expected:
            return f"tensor {name!r} has wrong offsets"
        end = max(end, stop)
    size = path.stat().st_size
    if start + end != size:
        return f"{size} bytes where the header describes {start + end} (truncated)"
    return None


def nonfinite_tensor(path: Path) -> str | None:
    """The first floating-point tensor of a (complete) safetensors file that holds a NaN or an infinity."""
    import numpy as np

    read = safetensors_header(path)
    if isinstance(read, str):
        return None  # safetensors_problem says what is wrong
    start, header = read
    values = np.memmap(path, dtype=np.uint8, mode="r")
    for name, tensor in header.items():
        dtype, (begin, stop) = tensor["dtype"], tensor["data_offsets"]  # type: ignore[index]
        raw = values[start + begin : start + stop]
        if dtype == "BF16":  # numpy has no bfloat16: an all-ones exponent is a NaN or an infinity
            bad = bool(((raw.view(np.uint16) & 0x7F80) == 0x7F80).any())
        elif dtype in FLOATS:
            bad = not bool(np.isfinite(raw.view(FLOATS[dtype])).all())
        else:
            continue
        if bad:
            return name
    return None


def torch_archive_problem(path: Path) -> str | None:
    """A torch file (.bin, .pt) is a zip archive: its CRCs find truncation and garbage."""
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (OSError, zipfile.BadZipFile):
        return "not a readable torch archive (truncated?)"
    return f"corrupt entry {broken}" if broken else None


def json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return f"not readable JSON ({type(error).__name__})"
    return None


def file_problem(path: Path) -> str | None:
    """The check that fits the file's kind; None for kinds without one (a tokenizer's vocab.txt)."""
    if path.suffix == ".safetensors":
        return safetensors_problem(path)
    if path.suffix in {".bin", ".pt", ".pth"}:
        return torch_archive_problem(path)
    if path.suffix == ".json":
        return json_problem(path)
    return None


def weights_files(model_dir: Path, files: ModelFiles) -> list[Path]:
    """A saved model's weights files: the first of `files.weights` present, or the shards its index lists."""
    present = next((model_dir / name for name in files.weights if (model_dir / name).is_file()), None)
    if present is None or not present.name.endswith(INDEX_SUFFIX):
        return [present] if present else []
    try:
        index = json.loads(present.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return [present]
    shards = set(index.get("weight_map", {}).values()) if isinstance(index, dict) else set()
    return [model_dir / shard for shard in sorted(shards) if isinstance(shard, str)]


def weights_problem(model_dir: Path, files: ModelFiles) -> tuple[Path, str] | None:
    """The damaged or missing weights file of a saved model folder, and what is wrong with it."""
    present = next((model_dir / name for name in files.weights if (model_dir / name).is_file()), None)
    if present is None:
        return model_dir, f"no weights ({' or '.join(files.weights)})"
    paths = weights_files(model_dir, files)
    if present.name.endswith(INDEX_SUFFIX):
        if json_problem(present):
            return present, "not readable JSON"
        if not paths or paths == [present]:
            return present, "lists no weight files"
    for path in paths:
        if not path.is_file():
            return path, "missing (listed in the index)"
        problem = file_problem(path)
        if problem:
            return path, problem
    return None


def checkpoint_problem(checkpoint: Path, files: ModelFiles) -> str | None:
    """Why a Trainer checkpoint cannot be resumed from, or None when it is complete (and, where training
    recorded the sha256 of its files in CHECKPOINT_MANIFEST, made of those files)."""
    if not (checkpoint / TRAINER_STATE).is_file():
        return f"{TRAINER_STATE} is missing (the save was cut off)"
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return f"{TRAINER_STATE}: not readable JSON"
    step = state.get("global_step") if isinstance(state, dict) else None
    if not isinstance(step, int) or not isinstance(state.get("log_history"), list):
        return f"{TRAINER_STATE} holds no global_step and log_history"
    if checkpoint.name.rsplit("-", 1)[-1] != str(step):
        return f"{TRAINER_STATE} says step {step}, the folder's name another"
    manifest = checkpoint / CHECKPOINT_MANIFEST
    if manifest.is_file() and json_problem(manifest):
        return f"{CHECKPOINT_MANIFEST}: not readable JSON"
    recorded = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    for name, digest in recorded.items() if isinstance(recorded, dict) else ():
        if not (checkpoint / name).is_file() or sha256(checkpoint / name) != digest:
            return f"{name} is not the file training saved there (its sha256 differs from {CHECKPOINT_MANIFEST})"
    damaged = weights_problem(checkpoint, files)
    if damaged:
        return f"{damaged[0].name}: {damaged[1]}"
    for required in (files.config, *CHECKPOINT_FILES):
        if not (checkpoint / required).is_file():
            return f"{required} is missing"
    for path in sorted(checkpoint.iterdir()):
        problem = file_problem(path) if path.is_file() else None
        if problem:
            return f"{path.name}: {problem}"
    return None
