"""Console-script entry point that hands over to taskipy.

`[project.scripts]` maps every taskipy task name to this function, so `uv run lint` runs the
same command as `uv run task lint`: the taskipy table stays the single definition. A task that
is one plain command (`python -m src serve`: no shell syntax, no pre- or post-task) replaces
this process (exec), so the process uv started is the command itself: its signals, its exit
code, and the processes that end with it (src/lifeline.py). Any other task runs through
taskipy, whose shell swallows Ctrl-C and would report 0 for an interrupted task, so this
process waits for the task (which gets the Ctrl-C from the terminal too) and reports 130
when it was interrupted.

Bytecode is compiled once: torch and transformers take ~12 s more to import from source
than from cached bytecode. After a plain `uv sync` (the README's set-up) Python caches what it
imports on the first run; `uv sync --compile-bytecode` compiles the venv at install time. Either
way the cache has to be read and written: some shells and sandboxes set
PYTHONDONTWRITEBYTECODE, which would compile the project's own modules and the tests again
on every run (~8 s of `uv run test`), so the tasks drop it. The cache is the usual
git-ignored `__pycache__` folders. A PYTHONPYCACHEPREFIX of your own leaves both alone.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tomllib
from collections.abc import MutableMapping
from pathlib import Path
from types import FrameType

from taskipy.cli import run

from src.errors import EXIT_INTERRUPTED

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHELL_SYNTAX = re.compile(r"[;&|<>()$`'\"\\*?~{}\[\]#=]")


def cache_bytecode(env: MutableMapping[str, str]) -> None:
    """Let Python keep its bytecode where PYTHONDONTWRITEBYTECODE would compile it on every run."""
    if not env.get("PYTHONPYCACHEPREFIX"):
        env.pop("PYTHONDONTWRITEBYTECODE", None)


def plain_command(task: str, root: Path = PROJECT_ROOT) -> list[str] | None:
    """The taskipy task as an argument list when it is one plain command; None when it needs taskipy."""
    taskipy = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("tool", {}).get("taskipy", {})
    tasks = taskipy.get("tasks", {})
    entry = tasks.get(task)
    command = entry.get("cmd") if isinstance(entry, dict) else entry
    if not isinstance(command, str) or SHELL_SYNTAX.search(command) or taskipy.get("settings", {}).get("use_vars"):
        return None
    if f"pre_{task}" in tasks or f"post_{task}" in tasks:
        return None
    words = command.split()
    return [sys.executable, *words[1:]] if words and words[0] == "python" else words or None


def main() -> None:
    cache_bytecode(os.environ)
    task = Path(sys.argv[0]).stem  # "lint", or "lint.exe" on Windows
    command = plain_command(task) if sys.platform != "win32" else None
    if command:
        os.chdir(PROJECT_ROOT)  # where taskipy runs its tasks
        os.execvp(command[0], [*command, *sys.argv[1:]])
    interrupted = False

    def note_interrupt(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        interrupted = True  # the task's processes got the same Ctrl-C and stop themselves

    signal.signal(signal.SIGINT, note_interrupt)
    code = run([task, *sys.argv[1:]], cwd=PROJECT_ROOT)
    if code is None or code < 0:  # the shell died of a signal
        code = 128 + (-code if code else signal.SIGINT)
    if interrupted and code == 0:
        code = EXIT_INTERRUPTED
    sys.exit(code)
