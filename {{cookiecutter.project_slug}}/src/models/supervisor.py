"""The thin supervisor `train-local` stays as while the training processes run (accelerate launch for several).

The training processes report how they ended through a status folder (src/errors.py writes
the report), so a user error in any of them becomes one `error:` line and exit 2 here,
Ctrl-C 130 and SIGTERM 143, without the launchers' own tracebacks. Each training process
marks in that folder when every process of the run has joined (a multi-node run waits for
that within training.rendezvous_timeout), and ends once its launcher is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, cast

from src import errors, lifeline

STATUS_DIR_ENV = errors.STATUS_DIR_ENV
LAUNCHER_PID_ENV = "TRAIN_LAUNCHER_PID"
JOINED_PREFIX = "joined-"  # a training process's mark in the status folder, once every process has joined


@dataclass(frozen=True)
class Join:
    """Other nodes must join: within `seconds`, `processes` on this node; `waited_for` names who is waited for."""

    seconds: float
    processes: int
    waited_for: str


def mark_joined(environ: Mapping[str, str]) -> None:
    """Tell this node's launcher that every process of the run has joined (see Supervisor)."""
    status_dir = Path(environ.get(STATUS_DIR_ENV) or "/nonexistent")
    if status_dir.is_dir():
        (status_dir / f"{JOINED_PREFIX}{os.getpid()}").touch()


def exit_with_the_launcher(environ: Mapping[str, str], interval: float = 1.0) -> None:
    """A training process ends, within `interval`, once its launcher or its own parent is gone.

    Under torchrun every rank runs in a session of its own, so a `kill -9` of the launcher (or of
    its process group) reaches no rank: without this watch they would train on, orphaned.
    """
    launcher = environ.get(LAUNCHER_PID_ENV)
    if not launcher:
        return
    pid, parent = int(launcher), os.getppid()

    def gone() -> bool:
        if os.getppid() != parent:  # orphaned: accelerate's process died
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, under another user
        return False

    def watch() -> None:
        while not gone():
            time.sleep(interval)
        os._exit(errors.EXIT_TERMINATED)  # nobody is left to read a report

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Supervisor:
    """Run the launcher, pass its output through, and turn how the processes ended into one exit code."""

    def __init__(self, argv: list[str], env: dict[str, str], join: Join | None = None) -> None:
        self.status_dir = Path(tempfile.mkdtemp(prefix="train-status-"))
        self.argv, self.env = argv, {**env, STATUS_DIR_ENV: str(self.status_dir), LAUNCHER_PID_ENV: str(os.getpid())}
        self.signalled: int | None = None
        self.join = join
        self.join_failed = False

    def _watch_join(self, seconds: float, processes: int) -> None:
        deadline = time.monotonic() + seconds
        while self.process.poll() is None:
            if len(list(self.status_dir.glob(f"{JOINED_PREFIX}*"))) >= processes:
                return
            if time.monotonic() > deadline:
                self.join_failed = True
                self.process.terminate()  # accelerate's agent stops waiting; no rank has started
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=15)
                self.process.kill()
                return
            time.sleep(0.5)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = signum
        if signum == signal.SIGTERM:
            self.process.send_signal(signal.SIGTERM)  # Ctrl-C reaches the whole group by itself

    def statuses(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self.status_dir.glob("*.json")):
            try:
                found.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return found

    def run(self) -> int:
        # The launcher is not ours: it is asked to end with this process as it starts (src/lifeline.py).
        self.process = subprocess.Popen(
            self.argv, env=self.env, stderr=subprocess.PIPE, preexec_fn=lifeline.ending_with_this_process
        )
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        if self.join is not None:
            threading.Thread(
                target=self._watch_join, args=(self.join.seconds, self.join.processes), daemon=True
            ).start()
        try:
            stderr = cast(IO[bytes], self.process.stderr)
            passing, last = True, b"\n"
            while chunk := stderr.read1(65536):  # type: ignore[attr-defined]
                # Once a process has reported (or a signal came), the rest is launcher noise.
                reported = any(self.status_dir.glob("*.json"))
                passing = passing and self.signalled is None and not reported and not self.join_failed
                if passing:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()
                    last = chunk[-1:]
            if last != b"\n":  # a progress bar's line, cut short: what this launcher says starts a line of its own
                sys.stderr.buffer.write(b"\n")
                sys.stderr.flush()
            returncode = self.process.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.outcome(returncode)

    def outcome(self, returncode: int) -> int:
        if self.join_failed and self.join is not None and self.signalled is None:
            advice = "start train-local on every node, and check that they reach the head node's port"
            print(f"error: {self.join.waited_for} did not join within {self.join.seconds:g} s "
                  f"(training.rendezvous_timeout): {advice}", file=sys.stderr)  # fmt: skip
            return errors.EXIT_USER_ERROR
        statuses = self.statuses()
        codes = {int(status.get("code", 1)) for status in statuses}
        messages = list(dict.fromkeys(str(status["message"]) for status in statuses if status.get("message")))
        for message in messages:
            print(f"error: {message}", file=sys.stderr, flush=True)
        if self.signalled == signal.SIGINT or errors.EXIT_INTERRUPTED in codes:
            print("interrupted", file=sys.stderr, flush=True)
            return errors.EXIT_INTERRUPTED
        if self.signalled == signal.SIGTERM or errors.EXIT_TERMINATED in codes:
            print("terminated", file=sys.stderr, flush=True)
            return errors.EXIT_TERMINATED
        if errors.EXIT_USER_ERROR in codes:
            return errors.EXIT_USER_ERROR
        if returncode < 0 and not messages:  # the lone training process, killed (kill -9, the OOM killer)
            advice = "`uv run train-local --resume` goes on from its last checkpoint"
            print(f"error: the training process was killed by {signal_name(-returncode)} (out of memory? `dmesg` "
                  f"says): {advice}", file=sys.stderr, flush=True)  # fmt: skip
        return returncode if returncode >= 0 else 128 - returncode

    def cleanup(self) -> None:
        for path in self.status_dir.glob("*"):
            path.unlink(missing_ok=True)
        self.status_dir.rmdir()
