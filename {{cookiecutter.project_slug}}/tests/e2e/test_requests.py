"""The server as every task has it, against one real LitServe server on 127.0.0.1 (started once per test
run, in its own processes): bad and hostile bodies, the API key, slow clients, a second server on its port,
an idle server's CPU, and what the server's parent process imports."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from src.config import PROJECT_ROOT, load_settings
from src.deployment import serve
from src.task import TASK
from tests.helpers.processes import call, group_cpu_seconds, only_error_line
from tests.helpers.server import Server

ROUTE, EXAMPLE = TASK.serving.route, TASK.serving.example


def test_form_content_type_is_read_as_json(client: httpx.Client) -> None:
    # What `curl -d '{...}'` sends.
    response = client.post(
        ROUTE, content=json.dumps(EXAMPLE), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 422),
        (b"{}", 422),
        (b"[]", 422),
        (b'{"text": "' + b"a" * 6_000_000 + b'"}', 413),
    ],
    ids=["not-json", "missing-field", "array", "6MB"],
)
def test_bad_input_gets_4xx_and_server_survives(client: httpx.Client, body: bytes, status: int) -> None:
    response = client.post(ROUTE, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert client.get("/health").status_code == 200


def test_a_chunked_body_past_the_limit_gets_413(client: httpx.Client) -> None:
    limit = load_settings(environ={}).serving.max_payload_bytes
    chunks = (b'{"text": "' + b"a" * 65536 for _ in range(limit // 65536 + 2))  # no Content-Length: chunked
    response = client.post(ROUTE, content=chunks, headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert client.get("/health").status_code == 200


def test_api_key_guards_every_route(server: Server) -> None:
    url = server.url
    assert httpx.post(f"{url}{ROUTE}", json=EXAMPLE).status_code == 401
    for path in ("/health", "/openapi.json", "/docs", "/redoc", "/info", "/no-such-route"):
        assert httpx.get(f"{url}{path}").status_code == 401, path
    wrong = {"X-API-Key": "wrong"}
    assert httpx.post(f"{url}{ROUTE}", json=EXAMPLE, headers=wrong).status_code == 401
    assert httpx.get(f"{url}/openapi.json", headers=wrong).status_code == 401
    assert httpx.post(f"{url}{ROUTE}", json=EXAMPLE, headers=server.headers).status_code == 200
    assert httpx.get(f"{url}/openapi.json", headers=server.headers).status_code == 200
    bearer = {"Authorization": f"Bearer {server.headers['X-API-Key']}"}  # how OpenAI-style clients send a key
    assert httpx.post(f"{url}{ROUTE}", json=EXAMPLE, headers=bearer).status_code == 200
    wrong_bearer = {"Authorization": "Bearer wrong"}
    assert httpx.post(f"{url}{ROUTE}", json=EXAMPLE, headers=wrong_bearer).status_code == 401
    unsaid = {"Authorization": server.headers["X-API-Key"]}  # the key without its scheme
    assert httpx.post(f"{url}{ROUTE}", json=EXAMPLE, headers=unsaid).status_code == 401
    lower = {"authorization": f"bearer {server.headers['X-API-Key']}"}
    assert httpx.post(f"{url}{ROUTE}", json=EXAMPLE, headers=lower).status_code == 200


# --- Bodies that parse as JSON but cannot be echoed back, and other hostile input ---


@pytest.mark.parametrize(
    "body",
    [b'{"\\ud800": 1}', b"[" * 20000 + b"]" * 20000, b'{"text": "\xff\xfe"}'],
    ids=["surrogate-key", "deep-nesting", "not-utf8"],
)
def test_unechoable_bodies_get_4xx_and_server_survives(client: httpx.Client, body: bytes) -> None:
    response = client.post(ROUTE, content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]
    assert client.get("/health").status_code == 200


# --- Slow clients ---


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(4096):
            received += chunk
    return received, time.monotonic() - started


def stall(server: Server, sent: bytes) -> tuple[bytes, float]:
    """Send `sent` and nothing more; what came back before the server closed, and after how long."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(sent)
        return read_until_closed(sock, server.read_timeout + 10)


def stall_next_headers(server: Server) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # no key: a 401 is answer enough
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        time.sleep(0.2)  # the answer is complete: uvicorn now waits with its keep-alive timer armed
        sock.sendall(f"POST {ROUTE} HTTP/1.1\r\nHost: x\r\n".encode())  # cancels that timer, and no more
        _, waited = read_until_closed(sock, server.read_timeout + 10)
        return answer, waited


@pytest.fixture(scope="module")
def stalled(server: Server) -> Iterator[dict[str, Future[tuple[bytes, float]]]]:
    """Every slow client of this module, started at once: each waits out the read timeout, so
    together they take one timeout, not four. A test reads its own outcome (what it received, how long)."""
    key = server.headers["X-API-Key"]
    headers = f"POST {ROUTE} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n".encode()
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield {
            "body": pool.submit(stall, server, headers + b'Content-Length: 100\r\n\r\n{"te'),  # ...no more
            "nothing": pool.submit(stall, server, b""),
            "half-headers": pool.submit(stall, server, f"POST {ROUTE} HTTP/1.1\r\nHost: x\r\n".encode()),
            "keep-alive": pool.submit(stall_next_headers, server),
        }


def test_client_that_stalls_its_body_is_dropped(
    server: Server, client: httpx.Client, stalled: dict[str, Future[tuple[bytes, float]]]
) -> None:
    received, waited = stalled["body"].result()
    assert waited < server.read_timeout + 5, "the connection was not dropped"
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert client.post(ROUTE, json=EXAMPLE).status_code == 200


@pytest.mark.parametrize("sent", ["nothing", "half-headers"])
def test_client_that_stalls_its_headers_is_dropped(
    server: Server, sent: str, stalled: dict[str, Future[tuple[bytes, float]]]
) -> None:
    _, waited = stalled[sent].result()
    assert waited < server.read_timeout + 5, "the connection was not dropped"


def test_kept_alive_connection_that_stalls_its_next_headers_is_dropped(
    server: Server, stalled: dict[str, Future[tuple[bytes, float]]]
) -> None:
    answer, waited = stalled["keep-alive"].result()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert waited < server.read_timeout + 5, "the connection was not dropped"


# --- A second server, an idle one, and the parent's imports ---


def test_second_server_on_the_same_port_is_refused(
    server: Server, trained_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(serve, "run_server", lambda *args: pytest.fail("the second server started serving"))
    assert call(serve.main, "--port", str(server.port), "--model-dir", str(trained_model)) == 2
    assert "in use" in only_error_line(capsys.readouterr().err)
    assert server.healthy(), "the first server is untouched"


def test_an_idle_server_leaves_the_cores_alone(server: Server) -> None:
    """Waiting for requests costs no CPU (LitServe's own batched loop spins on a core while its queue is
    empty when batch_timeout is 0: src/deployment/batching.py)."""
    with server.client(timeout=60) as session:  # busy first, so that the worker is in its loop
        assert session.post(ROUTE, json=EXAMPLE).status_code == 200
    before = group_cpu_seconds(server.process.pid)
    time.sleep(2.0)
    used = group_cpu_seconds(server.process.pid) - before
    assert used < 0.5, f"the idle server used {used:.2f} s of CPU in 2 s"


def test_server_parent_imports_neither_torch_nor_transformers(trained_model: Path) -> None:
    # LitServe forks its API servers from the parent: what it imports, they all carry.
    code = (
        "import sys; from pathlib import Path; from src import model_folder; from src.deployment import serve;"
        "from src.task import TASK; folder = TASK.inspect(model_folder.resolve(Path(sys.argv[1]), TASK.model_files));"
        "TASK.serving.choose(serve.load_settings(TASK.settings).serving, folder);"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(trained_model)], capture_output=True, text=True,
                            check=False, cwd=PROJECT_ROOT)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
