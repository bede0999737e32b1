"""Reading what a finished run folder holds beyond the model (light: yaml and json only).

The folder format itself is src/runs.py; this adds the settings a run was trained with,
which evaluation, prediction and comparison all read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from src.cli import UserError

RUN_SETTINGS = "settings.yaml"


def stored_settings(run_dir: Path) -> dict[str, Any]:
    """The settings a run was trained with ({} for a model folder that is not a run)."""
    path = run_dir / RUN_SETTINGS
    try:
        stored = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UserError(f"{path}: unreadable ({error})"[:300]) from None
    return stored if isinstance(stored, dict) else {}


def section(stored: dict[str, Any], name: str) -> dict[str, Any]:
    value = stored.get(name)
    return value if isinstance(value, dict) else {}


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing or damaged."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
