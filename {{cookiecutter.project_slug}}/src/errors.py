"""The one error path every command goes through.

A problem the user can fix (settings, flags, files, data, model folders, network) is a
`UserError` raised where it is found. Each command's `main()` runs inside `run()`, which
turns a `UserError` into one `error: ...` line and exit code 2, Ctrl-C into 130 and
SIGTERM into 143. Anything else is a bug and keeps its traceback. No heavy imports.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import NoReturn

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143

# OS errors the user fixes by freeing space or choosing another place: no traceback.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
# Set by a parent that speaks for its child processes (train-local's supervisor, a task's step
# before serving): they report how they ended in a file there instead of printing, and the
# parent prints one line for them all (`reported`).
STATUS_DIR_ENV = "CHILD_STATUS_DIR"


class UserError(Exception):
    """Something the user can fix; the message names the file, field or flag and the fix."""


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler, `kill`, the cloud stopping the node)."""


# The signal that ended the command, noted before its exception is raised: an exception raised
# while a `__del__` runs is printed and dropped by Python, so the note is what still counts.
_received: list[int] = []


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise Terminated


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


_held: list[bool] = []  # inside signals_held()


def on_stop_signal(signum: int, frame: FrameType | None, *, hold: bool = False) -> None:
    """SIGINT's and SIGTERM's handler where a command chooses when to raise: the signal is noted, and
    raised (KeyboardInterrupt or Terminated) unless `hold` (a shutdown under way that must run to its end)
    or inside signals_held()."""
    if hold or _held:
        _received.append(signum)
    else:
        (_raise_terminated if signum == signal.SIGTERM else _raise_interrupted)(signum, frame)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Where on_stop_signal is the handler: a Ctrl-C or SIGTERM inside is raised once the block is done
    (a child half started would end with a traceback of its own)."""
    noted = len(_received)
    _held.append(True)
    try:
        yield
    finally:
        _held.pop()
    if len(_received) > noted:
        raise_if_signalled()


def quiet_swallowed_signals() -> None:
    """Python prints, then drops, an exception raised in a finalizer (`__del__`, a weakref callback): for a
    Ctrl-C or SIGTERM print nothing either; the note is what counts (raise_if_signalled, serve's watch)."""
    previous = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt | Terminated):
            previous(unraisable)

    sys.unraisablehook = hook


def signalled() -> bool:
    """Whether a Ctrl-C or SIGTERM has arrived during this command."""
    return bool(_received)


def raise_if_signalled() -> None:
    """Raise again for a Ctrl-C or SIGTERM whose exception was swallowed (call before publishing)."""
    if _received:
        raise Terminated if _received[0] == signal.SIGTERM else KeyboardInterrupt


def describe_os_error(error: OSError) -> str:
    where = f" {error.filename}" if error.filename else ""
    advice = "free some space" if error.errno in {errno.ENOSPC, errno.EDQUOT} else "fix its permissions"
    return f"cannot write{where}: {error.strerror} ({advice}, or point the setting at another folder)"


def write_status(status_dir: Path, code: int, message: str) -> None:
    """How this process ended, for the parent that speaks for it (see STATUS_DIR_ENV)."""
    status_file = status_dir / f"{os.getpid()}.json"
    status_file.write_text(json.dumps({"code": code, "message": message}), encoding="utf-8")


def _report(code: int, message: str) -> None:
    status_dir = Path(os.environ.get(STATUS_DIR_ENV) or "/nonexistent")
    if status_dir.is_dir():
        write_status(status_dir, code, message)
    elif message:
        print(f"error: {message}", file=sys.stderr, flush=True)
    elif code != EXIT_USER_ERROR:
        print("interrupted" if code == EXIT_INTERRUPTED else "terminated", file=sys.stderr, flush=True)


def _statuses(status_dir: Path) -> list[dict[str, object]]:
    found = []
    for path in sorted(status_dir.glob("*.json")):
        try:
            status = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(status, dict):
            found.append(status)
    return found


def status_message(status_dir: Path) -> str | None:
    """The first error a child reported into `status_dir`, if one did."""
    return next((str(status["message"]) for status in _statuses(status_dir) if status.get("message")), None)


def reported(status_dir: Path, code: int, what: str) -> BaseException:
    """How a child that reported into `status_dir` ended, as the exception this process ends with."""
    if message := status_message(status_dir):
        return UserError(message)
    for status in _statuses(status_dir):
        code = int(str(status.get("code", code)))
    if code == EXIT_INTERRUPTED:
        return KeyboardInterrupt()
    if code == EXIT_TERMINATED:
        return Terminated()
    return UserError(f"{what} failed (exit code {code}): its output is above")


def _stopping() -> None:
    # What is left is the report and the interpreter's exit: a second Ctrl-C must not cut the report
    # short, and a second SIGTERM ends the process at once (no traceback from an exit handler).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def exit_code(main: Callable[[], int | None]) -> int:
    """Run `main` and map how it ended to an exit code (reporting the one error line)."""
    _received.clear()
    signal.signal(signal.SIGTERM, _raise_terminated)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an ignored Ctrl-C stays ignored
        signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        code = main() or 0
        if code == 0:  # a command that reports its own interruption keeps its code
            raise_if_signalled()
        return code
    except UserError as error:
        _report(EXIT_USER_ERROR, str(error))
        return EXIT_USER_ERROR
    except OSError as error:
        if error.errno not in ENVIRONMENT_ERRNOS:
            raise
        _report(EXIT_USER_ERROR, describe_os_error(error))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        _stopping()
        _report(EXIT_INTERRUPTED, "")
        return EXIT_INTERRUPTED
    except Terminated:
        _stopping()
        _report(EXIT_TERMINATED, "")
        return EXIT_TERMINATED
    finally:
        _received.clear()  # the next in-process command (tests) starts unsignalled


def run(main: Callable[[], int | None]) -> NoReturn:
    """A process's whole life: `main`, ended by SIGTERM when its parent ends (src/lifeline.py)."""
    from src.lifeline import end_with_parent

    end_with_parent()
    sys.exit(exit_code(main))
