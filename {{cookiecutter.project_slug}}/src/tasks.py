"""Console-script entry point that hands over to taskipy.

`[project.scripts]` maps every task name to this function, so `uv run lint` runs the
same command as `uv run task lint`: the taskipy table stays the single definition.
The exit code is the task's own: taskipy swallows Ctrl-C and would report 0 for an
interrupted task, so this process waits for the task (which gets the Ctrl-C from the
terminal too) and reports 130 when it was interrupted.

Bytecode is compiled once: torch and transformers take ~12 s more to import from source
than from cached bytecode. Python caches it by itself, unless PYTHONDONTWRITEBYTECODE is
set (some shells and sandboxes do); then the tasks keep their cache in `.venv/pycache`
(PYTHONPYCACHEPREFIX) instead, so the source tree stays free of bytecode as asked and the
second run imports as fast as it would elsewhere. A PYTHONPYCACHEPREFIX of your own wins.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import MutableMapping
from pathlib import Path
from types import FrameType

from taskipy.cli import run

from src.cli import EXIT_INTERRUPTED

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_bytecode_in_venv(env: MutableMapping[str, str], venv: Path) -> None:
    """Where PYTHONDONTWRITEBYTECODE would make every run compile the heavy imports again."""
    if env.get("PYTHONDONTWRITEBYTECODE") and not env.get("PYTHONPYCACHEPREFIX"):
        del env["PYTHONDONTWRITEBYTECODE"]
        env["PYTHONPYCACHEPREFIX"] = str(venv / "pycache")


def main() -> None:
    cache_bytecode_in_venv(os.environ, Path(sys.prefix))
    interrupted = False

    def note_interrupt(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        interrupted = True  # the task's processes got the same Ctrl-C and stop themselves

    signal.signal(signal.SIGINT, note_interrupt)
    task = Path(sys.argv[0]).stem  # "lint", or "lint.exe" on Windows
    code = run([task, *sys.argv[1:]], cwd=PROJECT_ROOT)
    if code is None or code < 0:  # the shell died of a signal
        code = 128 + (-code if code else signal.SIGINT)
    if interrupted and code == 0:
        code = EXIT_INTERRUPTED
    sys.exit(code)
