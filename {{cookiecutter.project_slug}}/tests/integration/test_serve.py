"""The REST API, tested against a real LitServe server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from src.config import PROJECT_ROOT
from src.deployment.classifier import Classifier
from src.deployment.serve import PredictRequest

API_KEY = "test-key-123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_server(model_dir: Path, **env: str) -> Iterator[str]:
    """Start `python -m src.deployment.serve`, wait for /health, stop it (and its workers)."""
    port = free_port()
    environ = {key: value for key, value in os.environ.items() if key != "LIT_SERVER_API_KEY"}
    process = subprocess.Popen(
        [sys.executable, "-m", "src.deployment.serve", "--host", "127.0.0.1", "--port", str(port),
         "--model-dir", str(model_dir)],
        cwd=PROJECT_ROOT, env={**environ, **env}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": env["LIT_SERVER_API_KEY"]} if "LIT_SERVER_API_KEY" in env else {}
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                pytest.fail(f"server exited with {process.returncode}:\n{output[-3000:]}")
            try:
                if httpx.get(f"{url}/health", headers=headers, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server not healthy within 120 s")
            time.sleep(0.3)
        yield url
    finally:
        stop_group(process)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(process: subprocess.Popen[str]) -> None:
    """SIGTERM the server's process group (it spawns workers), SIGKILL what outlives 20 s."""
    os.killpg(process.pid, 15)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    deadline = time.monotonic() + 20
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive(process.pid):
        os.killpg(process.pid, 9)
        process.wait()


@pytest.fixture(scope="module")
def server(trained_model: Path) -> Iterator[str]:
    with running_server(trained_model) as url:
        yield url


TEXTS = [
    "great wonderful superb film",
    "awful boring dull mess, hated it",
    "the plot was quite moving and the cast brilliant",
    "tedious",
] * 16


@pytest.mark.parametrize("body", [{}, {"text": 5}, {"text": ""}, {"text": " \n "}, {"text": "x", "extra": 1}])
def test_request_schema_rejects(body: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"text|extra"):
        PredictRequest.model_validate(body)


def test_prediction_schema(server: str) -> None:
    response = httpx.post(f"{server}/predict", json={"text": "a charming, delightful movie"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"label", "score", "probabilities"}
    assert body["label"] in {"neg", "pos"}
    assert 0.0 <= body["score"] <= 1.0
    assert body["score"] == max(body["probabilities"].values())
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_form_content_type_is_read_as_json(server: str) -> None:
    # What `curl -d '{"text": ...}'` sends.
    response = httpx.post(
        f"{server}/predict",
        content=b'{"text": "great film"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text


def test_concurrent_requests_match_in_process_predictions(server: str, trained_model: Path) -> None:
    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post("/predict", json={"text": text}) for text in TEXTS))

    responses = asyncio.run(send_all())
    assert len(responses) == 64
    assert all(response.status_code == 200 for response in responses)
    expected = Classifier(trained_model).predict(TEXTS)
    for response, prediction in zip(responses, expected, strict=True):
        assert response.json()["label"] == prediction.label
        assert response.json()["score"] == pytest.approx(prediction.score, abs=1e-4)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 422),
        (b"{}", 422),
        (b'{"text": 5}', 422),
        (b'{"text": ""}', 422),
        (b'{"text": "   "}', 422),
        (b'{"text": "fine", "extra": 1}', 422),
        (b"[]", 422),
        (b'{"text": "' + b"a" * 6_000_000 + b'"}', 413),
    ],
    ids=["not-json", "missing-field", "wrong-type", "empty", "blank", "extra-field", "array", "6MB"],
)
def test_bad_input_gets_4xx_and_server_survives(server: str, body: bytes, status: int) -> None:
    response = httpx.post(f"{server}/predict", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert httpx.get(f"{server}/health").status_code == 200


def test_api_key_guards_every_route(trained_model: Path) -> None:
    with running_server(trained_model, LIT_SERVER_API_KEY=API_KEY) as url:
        assert httpx.post(f"{url}/predict", json={"text": "great"}).status_code == 401
        assert httpx.get(f"{url}/health").status_code == 401
        wrong = {"X-API-Key": "wrong"}
        assert httpx.post(f"{url}/predict", json={"text": "great"}, headers=wrong).status_code == 401
        ok = httpx.post(f"{url}/predict", json={"text": "great"}, headers={"X-API-Key": API_KEY})
        assert ok.status_code == 200


def test_server_leaves_no_process_behind(trained_model: Path) -> None:
    with running_server(trained_model) as url:
        port = int(url.rsplit(":", 1)[1])
    time.sleep(0.5)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "something still listens on the port"


def test_no_model_gives_instructions(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "src.deployment.serve", "--model-dir", str(tmp_path / "latest")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "uv run train-local" in result.stderr
    assert "--smoke" in result.stderr
    assert "Traceback" not in result.stderr


def test_serving_path_imports_no_training_code() -> None:
    # The Trainer import alone takes seconds; transformers may pull in accelerate itself.
    training = ("transformers.trainer", "datasets", "src.models.train_model", "src.models.data", "src.models.smoke")
    code = (
        "import sys, src.deployment.serve, src.deployment.classifier;"
        f"bad = [m for m in sys.modules if m.startswith({training!r})];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
