"""What complete weights are: the one check that training's resume and serving's start-up share.

A saved model's weights are `model.safetensors` (or shards listed in an index) or a torch
zip archive (`pytorch_model.bin`), a LoRA adapter's `adapter_model.safetensors` beside its
`adapter_config.json`; a Trainer checkpoint adds the optimizer and scheduler state and,
written last, trainer_state.json. The checks read headers and archive indices,
never the tensors, and import no torch: a second or so on a real-size model. Each returns
None when the file (or folder) is complete, else what is wrong with it.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path

from src.runs import TRAINER_STATE

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_WEIGHTS = "pytorch_model.bin"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's save_pretrained: the adapters only
ADAPTER_CONFIG = "adapter_config.json"
CHECKPOINT_FILES = ("optimizer.pt", "scheduler.pt")
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


def safetensors_problem(path: Path) -> str | None:
    """Every tensor the header lists has its declared size and lies inside the file, which ends with the last."""
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
    end = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = tensor["data_offsets"]
            expected = math.prod(tensor["shape"]) * DTYPE_BYTES[tensor["dtype"]]
        except (KeyError, TypeError, ValueError):
            return f"tensor {name!r} is described wrongly"
        if not 0 <= begin <= stop or stop - begin != expected:
            return f"tensor {name!r} has wrong offsets"
        end = max(end, stop)
    if 8 + header_bytes + end != size:
        return f"{size} bytes where the header describes {8 + header_bytes + end} (truncated)"
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


def weights_problem(model_dir: Path) -> tuple[Path, str] | None:
    """The damaged or missing weights file of a saved model folder, and what is wrong with it."""
    if (model_dir / SAFETENSORS).is_file():
        files = [model_dir / SAFETENSORS]
    elif (model_dir / SAFETENSORS_INDEX).is_file():
        index_path = model_dir / SAFETENSORS_INDEX
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return index_path, "not readable JSON"
        shards = set(index.get("weight_map", {}).values()) if isinstance(index, dict) else set()
        if not shards or not all(isinstance(shard, str) for shard in shards):
            return index_path, "lists no weight files"
        files = [model_dir / shard for shard in sorted(shards)]
    elif (model_dir / PYTORCH_WEIGHTS).is_file():
        files = [model_dir / PYTORCH_WEIGHTS]
    elif (model_dir / ADAPTER_WEIGHTS).is_file():
        files = [model_dir / ADAPTER_WEIGHTS]
    else:
        return model_dir, f"no weights ({SAFETENSORS} or {PYTORCH_WEIGHTS})"
    for path in files:
        if not path.is_file():
            return path, "missing (listed in the index)"
        problem = file_problem(path)
        if problem:
            return path, problem
    return None


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a Trainer checkpoint cannot be resumed from, or None when it is complete."""
    if not (checkpoint / TRAINER_STATE).is_file():
        return f"{TRAINER_STATE} is missing (the save was cut off)"
    damaged = weights_problem(checkpoint)
    if damaged:
        return f"{damaged[0].name}: {damaged[1]}"
    config = ADAPTER_CONFIG if (checkpoint / ADAPTER_WEIGHTS).is_file() else "config.json"
    for required in (config, *CHECKPOINT_FILES):
        if not (checkpoint / required).is_file():
            return f"{required} is missing"
    for path in sorted(checkpoint.iterdir()):
        problem = file_problem(path) if path.is_file() else None
        if problem:
            return f"{path.name}: {problem}"
    return None
