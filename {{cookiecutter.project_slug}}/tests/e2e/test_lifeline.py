"""A process ends with its parent, whichever way the parent ends (src/lifeline.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src import errors
from src.config import PROJECT_ROOT
from src.models import supervisor
from tests.helpers.processes import clean_env

# The parent starts a child that asks to end with it, prints the child's pid, and sleeps.
PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env={**os.environ, "PARENT_PID": str(os.getpid())})
print(child.pid, flush=True)
time.sleep(60)
"""
CHILD = """
import signal, sys, time
from src import lifeline
if {watch}:
    lifeline._ask_the_kernel = lambda signum: False  # as where the kernel cannot be asked
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
lifeline.end_with_parent()
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_parent(child_code: str) -> tuple[subprocess.Popen[str], int]:
    """PARENT, started with `child_code` for its child: the parent and the child's pid."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, child_code], env=env,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


def ended_with(parent: subprocess.Popen[str], child: int, within: float) -> bool:
    """Kill the parent with SIGKILL: whether the child ended within `within` seconds."""
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + within
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(child)


@pytest.mark.parametrize("watch", [False, True], ids=["kernel", "watching-thread"])
def test_a_child_ends_once_its_parent_is_killed_with_sigkill(watch: bool) -> None:
    parent, child = start_parent(CHILD.format(watch=watch))
    try:
        time.sleep(0.5)  # the child has asked
        assert alive(child)
        assert ended_with(parent, child, 5), "the child outlived its parent"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


# A child that asks late (a model worker imports torch first), told the pid its parent had; it notes SIGTERM.
LATE_CHILD = """
import os, signal, sys, time
from pathlib import Path
from src import lifeline
parent = int(os.environ["PARENT_PID"])  # as serve tells its worker its own pid
signal.signal(signal.SIGTERM, lambda *_: (Path({flag!r}).write_text("SIGTERM"), sys.exit(143)))
time.sleep(2)  # importing: the parent is killed meanwhile
lifeline.end_with_parent(parent=parent)
time.sleep(60)
"""


def test_a_child_that_asks_after_its_parent_was_killed_ends_at_once(tmp_path: Path) -> None:
    flag = tmp_path / "signalled"
    parent, child = start_parent(LATE_CHILD.format(flag=str(flag)))
    try:
        assert ended_with(parent, child, 10), "the child outlived its parent"
        assert flag.read_text() == "SIGTERM"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


def test_a_training_process_ends_when_its_launcher_is_gone() -> None:
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    watched = (
        "from src.models import supervisor; import os, time; supervisor.exit_with_the_launcher(os.environ, 0.1); "
        "time.sleep(60)"
    )
    rank = subprocess.Popen([sys.executable, "-c", watched], cwd=PROJECT_ROOT,
                            env=clean_env(**{supervisor.LAUNCHER_PID_ENV: str(launcher.pid)}))  # fmt: skip
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            rank.wait(timeout=1)  # the launcher lives: the rank trains on
        launcher.kill()
        launcher.wait()
        assert rank.wait(timeout=10) == errors.EXIT_TERMINATED
    finally:
        launcher.kill()
        rank.kill()
