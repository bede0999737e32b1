"""Console-script entry point that hands over to taskipy.

`[project.scripts]` maps every task name to this function, so `uv run lint` runs the
same command as `uv run task lint`: the taskipy table stays the single definition.
"""

from __future__ import annotations

import sys
from pathlib import Path

from taskipy.cli import run

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    task = Path(sys.argv[0]).stem  # "lint", or "lint.exe" on Windows
    sys.exit(run([task, *sys.argv[1:]], cwd=PROJECT_ROOT))
