"""Helpers every test may use; nothing heavy is imported here (tests/integration/conftest.py
holds the fixtures that build and train models), so settings and command tests stay light."""

from __future__ import annotations

import os
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
    """`python -m module args` in the project root, as a task runs it."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=PROJECT_ROOT, env=clean_env() if env is None else env,
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


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
