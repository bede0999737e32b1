"""Helpers every test may use; nothing heavy is imported here (tests/integration/conftest.py
holds the fixtures that build and train models), so settings and command tests stay light."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from src.config import PROJECT_ROOT


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without settings overrides, SETTINGS_FILE or an API key, plus `extra`."""
    dropped = {"SETTINGS_FILE", "LIT_SERVER_API_KEY", "HF_TOKEN"}
    env = {key: value for key, value in os.environ.items() if "__" not in key and key not in dropped}
    env = {key: value for key, value in env.items() if not key.startswith("SKYPILOT_")}
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_module(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m module args` in the project root, as a task runs it.

    It runs in a session of its own: on a timeout the whole group (server workers, training
    processes) is killed, so a hanging regression leaves nothing running behind the test.
    """
    command = [sys.executable, "-m", module, *args]
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=clean_env() if env is None else env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # what the command left behind, if anything
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def only_error_line(stderr: str) -> str:
    """The stderr of a failed command: exactly one `error:` line and no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def sky_api_servers() -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "sky.server.server" in cmdline or "sky/server/server.py" in cmdline:
            found.append(cmdline)
    return found
