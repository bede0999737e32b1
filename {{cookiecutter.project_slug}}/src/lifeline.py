"""Every process of a command ends with the one the user started, whichever of them is killed.

`uv run train-local` is a chain of processes: uv, the command (`python -m src train-local`,
which the console script execs), accelerate's launcher when there are several, the training processes; `uv run serve`
has LitServe's HTTP and model processes, and a task's children (a model check or export). A signal
reaches only the process it names: after `kill -9` of uv, the processes below it would run on,
orphaned (a training run would finish and move `latest`, an export would hold its lock). So
every process of ours asks to be sent SIGTERM when its parent ends (`end_with_parent`: Linux's
PR_SET_PDEATHSIG, elsewhere a thread that watches the parent's id), and SIGTERM ends each one
the way it always does: 143, its own clean-up, nothing published. A process not of ours (the
launcher), or one that imports for seconds before it could ask (a task's export or check), gets
the same request from its parent, as it starts (`ending_with_this_process`); a model worker, which
LitServe starts, is told its parent's pid and asks as it sets up.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_INTERVAL_S = 0.5  # where the kernel cannot tell: how often the watching thread looks


def _ask_the_kernel(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def end_with_parent(signum: int = signal.SIGTERM, *, parent: int | None = None) -> None:
    """Have `signum` sent to this process once its parent process has ended (call from the main thread).

    `parent`: the parent's pid as the parent knew it, for a process that asks late (a model worker asks
    after importing torch) and whose parent may have ended before: without it, the parent this process
    has now (which, once orphaned, is no longer the one that started it)."""
    parent = os.getppid() if parent is None else parent
    if not _ask_the_kernel(signum):

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(WATCH_INTERVAL_S)
            os.kill(os.getpid(), signum)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent ended before the kernel was asked
        os.kill(os.getpid(), signum)


def ending_with_this_process() -> None:
    """`preexec_fn` for a child that is not ours: SIGTERM once this process (its parent) ends."""
    _ask_the_kernel(signal.SIGTERM)
