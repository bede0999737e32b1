"""A real `uv run serve` (python -m src serve) on 127.0.0.1, started and stopped as a group."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.helpers.processes import clean_env, free_port, start_module, stop_group

HEALTHY_WITHIN = 120  # seconds; start-up is 5-15 s on a laptop CPU


@dataclass
class Server:
    url: str
    port: int
    log: Path
    process: subprocess.Popen[str]
    headers: dict[str, str] = field(default_factory=dict)
    read_timeout: float = 10.0  # serving.read_timeout's default

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def client(self, **options: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, **options)  # type: ignore[arg-type]

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", headers=self.headers, timeout=2).status_code == 200
        except httpx.TransportError:
            return False


def start_server(model_dir: Path, *args: str, api_key: str | None = None, **env: str) -> Server:
    """Start the server without waiting for it (see wait_until_healthy)."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix=f"serve-{port}-", suffix=".log")[1])
    if api_key is not None:
        env["LIT_SERVER_API_KEY"] = api_key
    with log.open("w") as sink:
        process = start_module(
            "src", "serve", "--host", "127.0.0.1", "--port", str(port), "--model-dir", str(model_dir), *args,
            env=clean_env(**env), stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    headers = {"X-API-Key": api_key} if api_key is not None else {}
    read_timeout = float(env.get("SERVING__READ_TIMEOUT", Server.read_timeout))
    return Server(f"http://127.0.0.1:{port}", port, log, process, headers, read_timeout)


def wait_until_healthy(server: Server) -> Server:
    deadline = time.monotonic() + HEALTHY_WITHIN
    while not server.healthy():
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode}:\n{server.output()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"server not healthy within {HEALTHY_WITHIN} s:\n{server.output()[-3000:]}")
        time.sleep(0.2)
    return server


def stop_server(server: Server, sig: int = signal.SIGTERM) -> int:
    code = stop_group(server.process, sig)
    server.log.unlink(missing_ok=True)
    return code


@contextmanager
def running_server(model_dir: Path, *args: str, api_key: str | None = None, **env: str) -> Iterator[Server]:
    server = start_server(model_dir, *args, api_key=api_key, **env)
    try:
        yield wait_until_healthy(server)
    finally:
        stop_server(server)


def http_process(server: Server) -> int:
    """The pid of the process that answers HTTP (LitServe's API server): the one holding our connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(
            f"{name}: {value}\r\n".encode() for name, value in server.headers.items()) + b"\r\n")  # fmt: skip
        assert connection.recv(100).startswith(b"HTTP/1.1 200")
        client_port = connection.getsockname()[1]
        inodes = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
            if local == server.port and remote == client_port:
                inodes.add(f"socket:[{fields[9]}]")
        for fd in Path("/proc").glob("[0-9]*/fd/*"):
            with contextlib.suppress(OSError):
                if str(fd.readlink()) in inodes:
                    return int(fd.parts[2])
    raise AssertionError("no process holds the connection")
