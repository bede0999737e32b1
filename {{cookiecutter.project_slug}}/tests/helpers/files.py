"""Small ways to damage a file, shared by the core's and the task's damages."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any


def truncate(path: Path, size: int = 100) -> None:
    with path.open("r+b") as handle:
        handle.truncate(size)


def set_json(path: Path, **values: Any) -> None:
    """Change some keys of a JSON file (a config a damage edits)."""
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}), encoding="utf-8")


def set_tensors(path: Path, value: float | None, rename: Callable[[str], str] = lambda name: name) -> None:
    """Rewrite a safetensors file in place, still complete: every floating-point value set to `value`
    (NaN, 1e30, ...; None keeps them), and each tensor renamed by `rename`."""
    import numpy as np

    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = bytearray(data[8 + length :])
    kinds = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
    for tensor in header.values():
        if value is not None and isinstance(tensor, dict) and tensor.get("dtype") in kinds:
            begin, end = tensor["data_offsets"]
            kind = kinds[tensor["dtype"]]
            body[begin:end] = np.full((end - begin) // np.dtype(kind).itemsize, value, dtype=kind).tobytes()
    renamed = json.dumps({rename(name) if name != "__metadata__" else name: tensor for name, tensor in header.items()})
    encoded = renamed.encode().ljust(len(renamed.encode()) + (-len(renamed.encode())) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(body))


def republish(model: Path) -> None:
    """Record the folder's files as they are now in its run.json: as if training had published them so."""
    from src.fingerprints import folder_files

    info = json.loads((model / "run.json").read_text())
    recorded = info.get("files", {})
    current = folder_files(model)
    set_json(model / "run.json", files={name: current[name] for name in recorded if name in current})
