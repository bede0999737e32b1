"""Small ways to damage a file, shared by the core's and the task's damages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def truncate(path: Path, size: int = 100) -> None:
    with path.open("r+b") as handle:
        handle.truncate(size)


def set_json(path: Path, **values: Any) -> None:
    """Change some keys of a JSON file (a config a damage edits)."""
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}), encoding="utf-8")
