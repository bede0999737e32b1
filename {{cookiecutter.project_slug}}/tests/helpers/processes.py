"""Processes the tests start: a user's environment, free ports, process groups killed on the way out."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from src import errors
from src.config import PROJECT_ROOT

# What a test must not inherit from the shell it runs in: settings overrides (any NAME__FIELD),
# another settings file, an API key, a Hub token, SkyPilot's variables of a cluster node.
DROPPED = {"SETTINGS_FILE", "LIT_SERVER_API_KEY", "HF_TOKEN"}


def inherited(name: str) -> bool:
    return "__" not in name and name not in DROPPED and not name.startswith("SKYPILOT_")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without settings overrides, SETTINGS_FILE, an API key or SkyPilot's variables, plus `extra`."""
    return {**{key: value for key, value in os.environ.items() if inherited(key)}, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_module(
    module: str, *args: str, env: dict[str, str] | None = None, python: Sequence[str] = (), **popen: object
) -> subprocess.Popen[str]:
    """`python -m module args` in the project root, as a task runs it, in a process group of its own
    (`python`: the interpreter's own options, such as `-X importtime`)."""
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, *python, "-m", module, *args], cwd=PROJECT_ROOT, env=clean_env() if env is None else env,
        start_new_session=True, text=True, **popen,
    )  # fmt: skip


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def stop_group(process: subprocess.Popen[str], sig: int = signal.SIGTERM, grace: float = 20) -> int:
    """Signal the process group, SIGKILL whatever outlives `grace` seconds; the leader's exit code."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    deadline = time.monotonic() + grace
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    kill_group(process)
    return process.wait()


def run_module(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300, python: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Run `python -m module args` to the end; on a timeout (or after it) its whole group is killed."""
    process = start_module(module, *args, env=env, python=python, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        kill_group(process)  # what the command left behind, if anything
        process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def call(main: Callable[[Sequence[str], Any], int | None], *argv: str) -> int:
    """A command's `main(argv, task)` in this process, with this project's task, through the one error path:
    its exit code. The error path takes SIGTERM, and SIGINT once interrupted; tests/conftest.py puts them back.
    """
    import importlib

    task = importlib.import_module("src.task").TASK  # by name: the tests that call commands import the task
    return errors.exit_code(lambda: main(list(argv), task))


def only_error_line(stderr: str) -> str:
    """The stderr of a failed command: exactly one `error:` line and no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


_import_probes: dict[tuple[str, ...], subprocess.Popen[str]] = {}


def start_import_probe(*modules: str) -> None:
    """Start finding out what importing `modules` loads, in a fresh interpreter (see imported_modules)."""
    if modules not in _import_probes:
        code = f"import sys; import {', '.join(modules)}; print('\\n'.join(sys.modules))"
        _import_probes[modules] = subprocess.Popen(
            [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=clean_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip


def imported_modules(*modules: str) -> set[str]:
    """What importing `modules` in a fresh interpreter loads (this one has imported everything already).

    tests/conftest.py starts the probes the run will ask for as soon as the tests are collected,
    so the slow ones (the serving worker imports torch) overlap other tests.
    """
    start_import_probe(*modules)
    probe = _import_probes.pop(modules)
    stdout, stderr = probe.communicate(timeout=120)
    assert probe.returncode == 0, stderr[-3000:]
    return set(stdout.split())


def processes_with(variable: str, value: str) -> list[int]:
    """The live processes whose environment has `variable=value` (a test's own output folder, say)."""
    wanted, found = f"{variable}={value}".encode(), []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            status = (proc / "stat").read_text()
            if status.rsplit(")", 1)[1].split()[0] != "Z" and wanted in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
    return found


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) so far of the live processes in process group `pgid`."""
    ticks = 0
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_until_none_with(variable: str, value: str, timeout: float) -> list[int]:
    """Wait for every process with `variable=value` to end; those still alive after `timeout`."""
    deadline = time.monotonic() + timeout
    while (alive := processes_with(variable, value)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def command_lines(pids: list[int]) -> list[str]:
    """What the processes `pids` run (for a failure's message): their command lines, cut short."""
    lines = []
    for pid in pids:
        with contextlib.suppress(OSError):
            lines.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
    return lines


def wait_until_some_with(variable: str, value: str, count: int, timeout: float) -> list[int]:
    """Wait for at least `count` live processes with `variable=value` (a command that has started its
    children, however slow the machine); those alive when found, or after `timeout`."""
    deadline = time.monotonic() + timeout
    while len(found := processes_with(variable, value)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def sky_api_servers() -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "sky.server.server" in cmdline or "sky/server/server.py" in cmdline:
                found.append(cmdline)
    return found


@contextlib.contextmanager
def started(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Hand out a started process; its group is killed on the way out, whatever happened."""
    try:
        yield process
    finally:
        kill_group(process)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
