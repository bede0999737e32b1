"""What a published run is made of and made from, by content (sha256); no torch.

A run folder must keep meaning what it meant when it was published. Training records in the
run's run.json the sha256 of every file its model is made of (`files`: weights, config,
tokenizer, task files) and of the local files it was made from (`inputs`: the data files, and a
base model given as a local folder). Every command that loads a run checks its files first
(src/model_folder.py: a changed or swapped file is refused with one line); evaluate checks the
evaluation data it is about to score the run's own report on, and a task that loads the base
model beside the run (weights that apply to it) checks the base model. A local base model is read whole
for this at each start: about a second per GB.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


UNRECORDED = {"README.md"}  # the model card: what the run says of itself, written after the model (model_card.py)


def folder_files(folder: Path) -> dict[str, str]:
    """sha256 of each file in `folder` and below, by its path relative to `folder` (hidden ones and the model
    card left out)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if (
            path.is_file()
            and relative.as_posix() not in UNRECORDED
            and not any(part.startswith(".") for part in relative.parts)
        ):
            found[relative.as_posix()] = sha256(path)
    return found


def local_inputs(paths: Mapping[str, str | Path | None]) -> dict[str, dict[str, Any]]:
    """The local files and folders among `paths` (setting name -> value), by content; Hub ids are left out."""
    found: dict[str, dict[str, Any]] = {}
    for name, value in paths.items():
        path = Path(value).expanduser() if value else None
        if path is not None and path.is_file():
            found[name] = {"path": str(path.resolve()), "sha256": sha256(path)}
        elif path is not None and path.is_dir():
            found[name] = {"path": str(path.resolve()), "files": folder_files(path)}
    return found


def changed(recorded: Mapping[str, Any], name: str) -> str | None:
    """How the input `name` that a run recorded differs from what is there now (None: unchanged or not recorded)."""
    entry = recorded.get(name)
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        return None
    path = Path(entry["path"])
    if isinstance(entry.get("sha256"), str):
        if not path.is_file():
            return f"{path} is gone"
        return None if sha256(path) == entry["sha256"] else f"{path} has changed"
    files = entry.get("files")
    if isinstance(files, dict):
        for relative, digest in files.items():
            file = path / relative
            if not file.is_file():
                return f"{file} is gone"
            if sha256(file) != digest:
                return f"{file} has changed"
    return None
