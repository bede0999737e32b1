"""Console-script entry point that hands over to taskipy.

`[project.scripts]` maps every taskipy task name to this function, so `uv run lint` runs the
same command as `uv run task lint`: the taskipy table stays the single definition.
The exit code is the task's own: taskipy swallows Ctrl-C and would report 0 for an
interrupted task, so this process waits for the task (which gets the Ctrl-C from the
terminal too) and reports 130 when it was interrupted.

Bytecode is compiled once: torch and transformers take ~12 s more to import from source
than from cached bytecode. `uv sync --compile-bytecode` (the README's set-up) compiles the
venv at install time; without it Python caches what it imports on the first run. Either
way the cache has to be read and written: some shells and sandboxes set
PYTHONDONTWRITEBYTECODE, which would compile the project's own modules and the tests again
on every run (~8 s of `uv run test`), so the tasks drop it. The cache is the usual
git-ignored `__pycache__` folders. A PYTHONPYCACHEPREFIX of your own leaves both alone.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import MutableMapping
from pathlib import Path
from types import FrameType

from taskipy.cli import run

from src.errors import EXIT_INTERRUPTED

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_bytecode(env: MutableMapping[str, str]) -> None:
    """Let Python keep its bytecode where PYTHONDONTWRITEBYTECODE would compile it on every run."""
    if not env.get("PYTHONPYCACHEPREFIX"):
        env.pop("PYTHONDONTWRITEBYTECODE", None)


def main() -> None:
    cache_bytecode(os.environ)
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
