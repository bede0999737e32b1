"""`uv run serve`: the fine-tuned classifier as a LitServe REST API.

POST /predict {"text": "..."} -> {"label": "pos", "score": 0.97, "probabilities": {...}}.
Concurrent requests are batched (serving.max_batch_size, serving.batch_timeout); the
worker truncates where the run was trained and picks the precision for its device
(src/deployment/classifier.py). Before anything starts, the port is checked and the
model folder is inspected (src/deployment/model_folder.py): a folder that cannot serve
fails with one `error:` line instead of a server that answers wrongly. This module stays
light (LitServe forks its API-server processes from this one): torch and transformers
load only in the inference worker, and no training code at all. Set LIT_SERVER_API_KEY to
require an `X-API-Key` header on every route: /health, /docs and /openapi.json too.
"""

# No `from __future__ import annotations` here: LitServe reads the real type of
# decode_request's argument to validate request bodies (422 instead of a 500).

import argparse
import asyncio
import errno
import hmac
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import litserve as ls
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from src import cli
from src.cli import UserError
from src.config import ServingSettings, load_settings
from src.deployment.model_folder import API_KEY_ENV, ModelFolder, inspect_model_folder, model_to_serve
from src.deployment.schemas import Prediction

API_KEY_HEADER = b"x-api-key"


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, description="the text to classify")

    @field_validator("text")
    @classmethod
    def not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text is blank: send some words to classify")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text is not valid Unicode (a lone surrogate such as \\ud800)") from None
        return text


def _printable(value: object) -> object:
    """Error details any JSON encoder accepts: no lone surrogates, no NaN or infinities."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, int | bool) or value is None:
        return value
    return _printable(str(value))


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422, minus the echo of the input (which cannot always be encoded: NaN, "\\ud800")."""
    problems = error.errors() if isinstance(error, RequestValidationError) else []
    detail = [
        {
            "loc": [_printable(part) for part in problem.get("loc", ())],
            "msg": _printable(problem.get("msg", "invalid")),
            "type": _printable(problem.get("type", "value_error")),
        }
        for problem in problems
    ]
    return JSONResponse({"detail": detail or "invalid request"}, status_code=422)


class RequestGuard:
    """Pure ASGI middleware in front of every route of the API servers.

    - With LIT_SERVER_API_KEY set, every request needs it in `X-API-Key` (LitServe's own
      check covers only /predict and /health; this covers /docs, /openapi.json, /info, ...).
    - A POST body is read as JSON whatever Content-Type the client sent (`curl -d` sends a
      form type), within `body_timeout` seconds (serving.read_timeout): a client that sends
      headers and then stalls gets 408 and is disconnected, so half-open requests cannot
      pile up (ReadDeadlineProtocol does the same for the headers).
    """

    def __init__(self, app: Any, *, api_key: str | None, body_timeout: float, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.body_timeout = body_timeout
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.api_key is not None and not hmac.compare_digest(headers.get(API_KEY_HEADER, b""), self.api_key):
            await _respond(send, 401, "missing or wrong X-API-Key header")
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _respond(send, 413, f"Payload too large (over {self.max_body_bytes} bytes)", close=True)
            return
        try:
            body = await asyncio.wait_for(self._read_body(receive), self.body_timeout)
        except TimeoutError:
            await _respond(send, 408, f"request body not received within {self.body_timeout:g} s", close=True)
            return
        if body is None:
            await _respond(send, 413, f"Payload too large (over {self.max_body_bytes} bytes)", close=True)
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return dict(await receive())  # only a disconnect can follow
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        kept = [(key, value) for key, value in scope["headers"] if key not in (b"content-type", b"content-length")]
        length = str(len(body)).encode()
        scope = {**scope, "headers": [*kept, (b"content-type", b"application/json"), (b"content-length", length)]}
        await self.app(scope, replay, send)

    async def _read_body(self, receive: Any) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise TimeoutError  # nobody is left to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _respond(send: Any, status: int, detail: str, close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ReadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, plus a deadline for the headers of every request.

    uvicorn waits forever for request headers: for a connection's first request, and for
    the next one on a kept-alive connection once its first bytes came (they cancel the
    keep-alive timer). A client that sends half a request line would hold the connection.
    The deadline starts when the connection opens and again when a response is complete;
    the body has its own deadline in RequestGuard.
    """

    read_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.headers_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self.await_headers()

    def await_headers(self) -> None:
        """Until the next request's headers are in (a new request cycle), or the deadline passes."""
        self.cancel_deadline()
        self.previous_cycle = self.cycle
        self.headers_deadline = self.loop.call_later(self.read_timeout, self.drop_slow)

    def cancel_deadline(self) -> None:
        if self.headers_deadline is not None:
            self.headers_deadline.cancel()
            self.headers_deadline = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self.previous_cycle:  # the headers are in
            self.cancel_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:  # what uvicorn waits for next
            self.await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_deadline()
        super().connection_lost(exc)

    def drop_slow(self) -> None:
        self.headers_deadline = None
        if self.cycle is self.previous_cycle and not self.transport.is_closing():
            self.transport.close()


class ClassifierAPI(ls.LitAPI):  # type: ignore[misc]
    def __init__(self, model: ModelFolder, serving: ServingSettings, threads: int) -> None:
        super().__init__(max_batch_size=serving.max_batch_size, batch_timeout=serving.batch_timeout)
        self.model_dir = model.path
        self.precision = serving.precision
        self.threads = threads

    def setup(self, device: str) -> None:
        import torch  # heavy: only in the worker

        from src.deployment.classifier import Classifier

        torch.set_num_threads(self.threads)
        self.classifier = Classifier(self.model_dir, device, precision=self.precision)
        print(
            f"worker ready on {device}: {self.classifier.precision}, {self.threads} CPU threads, "
            f"truncating at {self.classifier.max_length} tokens",
            flush=True,
        )

    def decode_request(self, request: PredictRequest) -> str:
        return request.text

    def batch(self, inputs: list[str]) -> list[str]:
        return list(inputs)

    def predict(self, texts: str | list[str]) -> Prediction | list[Prediction]:
        if isinstance(texts, str):  # batching off: one request at a time
            return self.classifier.predict([texts])[0]
        return self.classifier.predict(texts)

    def unbatch(self, output: list[Prediction]) -> list[Prediction]:
        return output

    def encode_response(self, output: Prediction) -> dict[str, Any]:
        return output.model_dump()


def threads_per_worker(serving: ServingSettings) -> int:
    if serving.threads_per_worker is not None:
        return serving.threads_per_worker
    return max(1, len(os.sched_getaffinity(0)) // serving.workers_per_device)


def build_server(serving: ServingSettings, model: ModelFolder) -> ls.LitServer:
    api = ClassifierAPI(model, serving, threads_per_worker(serving))
    guard = {
        "api_key": os.environ.get(API_KEY_ENV) or None,
        "body_timeout": serving.read_timeout,
        "max_body_bytes": serving.max_payload_bytes,
    }
    server = ls.LitServer(
        api,
        accelerator=serving.accelerator,
        devices=1,
        workers_per_device=serving.workers_per_device,
        timeout=serving.timeout,
        healthcheck_path="/health",
        # No max_payload_size: RequestGuard is the one limit. LitServe's own check raises inside the
        # body stream for a chunked body (no Content-Length), which uvicorn turns into a 500.
        middlewares=[(RequestGuard, guard)],
    )
    server.app.add_exception_handler(RequestValidationError, validation_error)
    return server


def _quiet_child_signals() -> None:
    # LitServe forks its API servers (multiprocessing its queue manager) from this process.
    # This process reports Ctrl-C or SIGTERM once and stops them; they stop without a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_server(server: ls.LitServer, serving: ServingSettings) -> None:
    """Serve until stopped; Ctrl-C still ends in KeyboardInterrupt (LitServe swallows it: exit 0)."""
    ReadDeadlineProtocol.read_timeout = serving.read_timeout  # read in the forked API servers
    interrupted = False

    def note_interrupt(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note_interrupt)
    os.register_at_fork(after_in_child=_quiet_child_signals)
    try:
        server.run(
            host=serving.host, port=serving.port, generate_client_file=False, pretty_logs=False,
            http=ReadDeadlineProtocol,
        )  # fmt: skip
    finally:
        # Stopped during start-up, LitServe leaves its workers loading the model, and they
        # crash with a traceback once its queue manager is gone: stop them first.
        for worker in getattr(server, "inference_workers", None) or []:
            if worker.is_alive():
                worker.terminate()
    if interrupted:
        raise KeyboardInterrupt


def ensure_port_free(host: str, port: int) -> None:
    """Fail before any start-up work when the port cannot be had (LitServe would start workers first)."""
    where = f"--port / serving.port ({port} on {host})"
    if port < 1024:
        raise UserError(f"{where}: LitServe serves on ports 1024-65535: choose one of those")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UserError(f"{where}: already in use (another server?): stop it or choose another port") from None
            raise UserError(f"{where}: cannot listen there ({error.strerror})") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve", description="Serve the fine-tuned model over HTTP.")
    parser.add_argument("--host", help="interface to listen on: 127.0.0.1, 0.0.0.0 or :: (default: serving.host)")
    parser.add_argument("--port", type=int, help="port to listen on, 1024-65535 (default: serving.port)")
    parser.add_argument("--model-dir", type=Path, help="saved model folder (default: serving.model_dir)")
    parser.add_argument("--precision", help="auto, fp32, bf16, fp16 or int8 (default: serving.precision)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    flags = {
        "serving.host": ("--host", args.host),
        "serving.port": ("--port", args.port),
        "serving.model_dir": ("--model-dir", args.model_dir),
        "serving.precision": ("--precision", args.precision),
    }
    serving = load_settings(flags=flags).serving
    ensure_port_free(serving.host, serving.port)
    if serving.precision == "int8" and serving.accelerator in ("cuda", "mps"):
        raise UserError(
            f"--precision / serving.precision: int8 runs on CPU only, not with serving.accelerator "
            f"{serving.accelerator}: use auto, fp16 or bf16 there"
        )
    model = inspect_model_folder(model_to_serve(serving.model_dir))
    print(
        f"Serving {model.path} on http://{serving.host}:{serving.port}/predict "
        f"(labels {', '.join(model.labels)}; truncating at {model.max_length} tokens)",
        flush=True,
    )
    try:
        run_server(build_server(serving, model), serving)
    except RuntimeError as error:
        if "workers failed to start" not in str(error):
            raise
        raise UserError(f"{model.path}: the model worker failed to start (its error is above)") from None
    return 0


if __name__ == "__main__":
    cli.run(main)
