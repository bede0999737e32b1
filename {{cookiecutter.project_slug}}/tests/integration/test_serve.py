"""The REST API, tested against a real LitServe server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.config import PROJECT_ROOT, SMOKE_SETTINGS_FILE, load_settings
from src.deployment.classifier import Classifier
from src.deployment.serve import PredictRequest
from src.models import smoke
from tests.conftest import clean_env, free_port, only_error_line, run_module

API_KEY = "test-key-123"
READ_TIMEOUT = 2  # seconds, for the slow-client tests (the default is 10)


@dataclass
class Server:
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def running_server(model_dir: Path, *args: str, **env: str) -> Iterator[Server]:
    """Start `python -m src.deployment.serve`, wait for /health, stop it (and its workers)."""
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve-test-{port}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "src.deployment.serve", "--host", "127.0.0.1", "--port", str(port),
             "--model-dir", str(model_dir), *args],
            cwd=PROJECT_ROOT, env=clean_env(**env), start_new_session=True,
            stdout=sink, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", log)
    headers = {"X-API-Key": env["LIT_SERVER_API_KEY"]} if "LIT_SERVER_API_KEY" in env else {}
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{server.output()[-3000:]}")
            try:
                if httpx.get(f"{server.url}/health", headers=headers, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server not healthy within 120 s")
            time.sleep(0.3)
        yield server
    finally:
        stop_group(process)
        log.unlink(missing_ok=True)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    """Signal the server's process group (it spawns workers), SIGKILL what outlives 20 s."""
    os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    deadline = time.monotonic() + 20
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive(process.pid):
        os.killpg(process.pid, 9)
        process.wait()
    return process.returncode


@pytest.fixture(scope="module")
def served(trained_model: Path) -> Iterator[Server]:
    # fp32, so answers can be compared exactly with the in-process classifier: int8's
    # activation scales depend on the batch a text lands in (test_classifier.py covers int8).
    with running_server(trained_model, "--precision", "fp32", SERVING__READ_TIMEOUT=str(READ_TIMEOUT)) as server:
        yield server


@pytest.fixture(scope="module")
def server(served: Server) -> str:
    return served.url


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
    expected = Classifier(trained_model, precision="fp32").predict(TEXTS)
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
    with running_server(trained_model, LIT_SERVER_API_KEY=API_KEY) as served:
        url = served.url
        assert httpx.post(f"{url}/predict", json={"text": "great"}).status_code == 401
        for path in ("/health", "/openapi.json", "/docs", "/redoc", "/info", "/no-such-route"):
            assert httpx.get(f"{url}{path}").status_code == 401, path
        wrong = {"X-API-Key": "wrong"}
        assert httpx.post(f"{url}/predict", json={"text": "great"}, headers=wrong).status_code == 401
        assert httpx.get(f"{url}/openapi.json", headers=wrong).status_code == 401
        key = {"X-API-Key": API_KEY}
        ok = httpx.post(f"{url}/predict", json={"text": "great"}, headers=key)
        assert ok.status_code == 200
        assert httpx.get(f"{url}/openapi.json", headers=key).status_code == 200


def test_server_leaves_no_process_behind(trained_model: Path) -> None:
    with running_server(trained_model) as served:
        port = int(served.url.rsplit(":", 1)[1])
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


# --- Bodies that parse as JSON but cannot be echoed back, and other hostile input ---


@pytest.mark.parametrize(
    "body",
    [
        b'{"text": NaN}',
        b'{"text": 1e999999}',
        b'{"text": -Infinity}',
        b'{"text": "\\ud800"}',
        b'{"text": "ok \\udfff"}',
        b'{"\\ud800": 1}',
        b'{"text": "fine", "extra": NaN}',
        b'{"text": ' + b"9" * 5000 + b"}",
        b"[" * 20000 + b"]" * 20000,
        b'{"text": "\xff\xfe"}',
    ],
    ids=["nan", "huge-float", "minus-inf", "surrogate", "low-surrogate", "surrogate-key", "nan-extra",
         "5000-digit-int", "deep-nesting", "not-utf8"],
)  # fmt: skip
def test_unechoable_bodies_get_4xx_and_server_survives(server: str, body: bytes) -> None:
    response = httpx.post(f"{server}/predict", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]
    assert httpx.get(f"{server}/health").status_code == 200


JSON_LEAVES = (
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, "\ud800", "a\udfff", " "])  # the usual suspects
    | st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(exclude_categories=()), max_size=20)  # surrogates included
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
BODIES = JSON_VALUES | st.fixed_dictionaries({"text": JSON_VALUES}, optional={"extra": JSON_VALUES})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES)
def test_no_json_body_gets_a_5xx(server: str, body: object) -> None:
    # json.dumps writes NaN/Infinity and escapes lone surrogates as \udxxx: what a client can send.
    content = json.dumps(body, allow_nan=True).encode()
    response = httpx.post(f"{server}/predict", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code < 500, (content[:200], response.text[:500])
    text = body.get("text") if isinstance(body, dict) and set(body) == {"text"} else None
    valid = isinstance(text, str) and bool(text.strip()) and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    assert (response.status_code == 200) == valid, (content[:200], response.text[:500])


# --- Slow clients ---


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(4096):
            received += chunk
    return received, time.monotonic() - started


def test_client_that_stalls_its_body_is_dropped(served: Server) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        sock.sendall(b'Content-Length: 100\r\n\r\n{"text": "gre')  # ...and nothing more
        received, waited = read_until_closed(sock, READ_TIMEOUT + 10)
    assert waited < READ_TIMEOUT + 5, "the connection was not dropped"
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert httpx.post(f"{served.url}/predict", json={"text": "great"}).status_code == 200


@pytest.mark.parametrize("sent", [b"", b"POST /predict HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "half-headers"])
def test_client_that_stalls_its_headers_is_dropped(served: Server, sent: bytes) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(sent)
        _, waited = read_until_closed(sock, READ_TIMEOUT + 10)
    assert waited < READ_TIMEOUT + 5, "the connection was not dropped"


# --- Start-up: everything checked before serving ---


def damaged_copy(trained_model: Path, target: Path, damage: str) -> Path:
    model = target / "model"
    shutil.copytree(trained_model, model)
    weights = model / "model.safetensors"
    if damage == "no-tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            (model / name).unlink(missing_ok=True)
    elif damage == "truncated-weights":
        os.truncate(weights, weights.stat().st_size // 2)
    elif damage == "tiny-weights":
        os.truncate(weights, 100)  # what `truncate -s 100` does
    elif damage == "garbage-weights":
        weights.write_bytes(os.urandom(weights.stat().st_size))
    elif damage == "no-weights":
        weights.unlink()
    elif damage == "config-not-json":
        (model / "config.json").write_text("{ this is not json", encoding="utf-8")
    elif damage == "config-not-a-classifier":
        config = json.loads((model / "config.json").read_text())
        config["architectures"] = ["DistilBertModel"]
        (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    elif damage == "bad-tokenizer":
        (model / "tokenizer.json").write_text('{"version": "1.0", "model": 42}', encoding="utf-8")
    elif damage == "a-file":
        shutil.rmtree(model)
        model.write_text("not a folder", encoding="utf-8")
    return model


DAMAGES = ["no-tokenizer", "truncated-weights", "tiny-weights", "garbage-weights", "no-weights", "config-not-json",
           "config-not-a-classifier", "bad-tokenizer", "a-file"]  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGES)
def test_model_folder_that_cannot_serve_fails_before_serving(trained_model: Path, tmp_path: Path, damage: str) -> None:
    model = damaged_copy(trained_model, tmp_path, damage)
    started = time.monotonic()
    result = run_module("src.deployment.serve", "--model-dir", str(model), "--port", str(free_port()), timeout=120)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert str(model) in only_error_line(result.stderr)
    assert "Uvicorn running" not in result.stdout + result.stderr, "nothing was served"
    assert time.monotonic() - started < 60


def test_port_in_use_fails_before_any_start_up_work(trained_model: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        # A model folder that does not exist: the port is checked first.
        result = run_module("src.deployment.serve", "--port", str(port), "--model-dir", str(tmp_path / "nothing"))
    line = only_error_line(result.stderr)
    assert result.returncode == 2
    assert "--port" in line
    assert "in use" in line
    assert time.monotonic() - started < 30


def test_second_server_on_the_same_port_fails(served: Server, trained_model: Path) -> None:
    port = served.url.rsplit(":", 1)[1]
    result = run_module("src.deployment.serve", "--port", port, "--model-dir", str(trained_model))
    assert result.returncode == 2
    assert "in use" in only_error_line(result.stderr)
    assert httpx.get(f"{served.url}/health").status_code == 200, "the first server is untouched"


@pytest.mark.parametrize("argv", [["--port", "0"], ["--port", "80"], ["--precision", "int4"]])
def test_bad_flags_exit_2(trained_model: Path, argv: list[str]) -> None:
    result = run_module("src.deployment.serve", "--model-dir", str(trained_model), *argv)
    assert result.returncode == 2
    assert argv[0] in only_error_line(result.stderr)


@pytest.mark.parametrize(
    ("sig", "code", "when"),
    [(signal.SIGINT, 130, "serving"), (signal.SIGTERM, 143, "serving"), (signal.SIGINT, 130, "starting")],
)
def test_ctrl_c_exits_130_and_sigterm_143(trained_model: Path, sig: int, code: int, when: str) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "src.deployment.serve", "--port", str(port), "--model-dir", str(trained_model)],
        cwd=PROJECT_ROOT, env=clean_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    if when == "starting":
        time.sleep(4)  # the worker is importing torch or loading the model
    else:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.3)
    assert stop_group(process, sig) == code
    assert process.stderr is not None
    assert "Traceback" not in process.stderr.read()


def test_server_parent_imports_neither_torch_nor_transformers(trained_model: Path) -> None:
    # LitServe forks its API servers from the parent: what it imports, they all carry.
    code = (
        "import sys; from pathlib import Path; from src.deployment import serve;"
        "serve.inspect_model_folder(serve.model_to_serve(Path(sys.argv[1])));"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(trained_model)], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Training and serving agree ---


@pytest.fixture(scope="module")
def short_model(smoke_assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke model trained with MODEL__MAX_LENGTH=32."""
    from src.models.train_model import train

    overrides = smoke.overrides(smoke_assets)
    overrides["training"] = {"output_dir": str(tmp_path_factory.mktemp("short")), "max_steps": 6}
    settings = load_settings(
        PROJECT_ROOT / "configs" / "settings.yaml",
        environ={"MODEL__MAX_LENGTH": "32"},
        overlays=[SMOKE_SETTINGS_FILE],
        overrides=overrides,
    )
    metrics = train(settings)
    run_dir: Path = settings.training.output_dir / str(metrics["run_id"])
    return run_dir


def test_served_model_truncates_at_the_trained_length(short_model: Path) -> None:
    assert json.loads((short_model / "run.json").read_text())["max_length"] == 32
    prefix = "the film was great and the cast brilliant but the plot " * 4  # well over 32 tokens
    long_texts = [prefix + "awful boring dull terrible " * 200, prefix + "superb moving delightful " * 200]
    with running_server(short_model) as served:
        answers = [httpx.post(f"{served.url}/predict", json={"text": text}, timeout=60).json() for text in long_texts]
        assert "truncating at 32 tokens" in served.output()
    # Everything after the 32nd token is ignored: texts that differ only there get the same answer.
    assert answers[0]["probabilities"] == pytest.approx(answers[1]["probabilities"], abs=1e-6)
    assert all(len(ids) == 32 for ids in Classifier(short_model).encode(long_texts))
