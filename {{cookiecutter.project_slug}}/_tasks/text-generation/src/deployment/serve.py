"""`uv run serve`: the fine-tuned chat model as an OpenAI-compatible API (LitServe's OpenAISpec).

POST /v1/chat/completions takes OpenAI's chat request (messages, max_tokens or
max_completion_tokens, temperature, top_p, stop, stream) and answers as OpenAI does, with
usage counts; with `"stream": true` the completion arrives as server-sent events, piece by
piece as it is generated, so the official `openai` client works unchanged. Requests run one
at a time per worker (serving.workers_per_device workers). Before anything starts, the port
is checked and the run folder is inspected (src/model_folder.py): a folder that cannot serve
fails with one `error:` line instead of a server that answers wrongly. This module stays
light (LitServe forks its API-server processes from this one): torch, transformers and peft
load only in the inference worker. Set LIT_SERVER_API_KEY to require the key on every route,
/health, /docs and /openapi.json too (`X-API-Key` or `Authorization: Bearer`); http_guard.py
holds that and the other request limits.
"""

# No `from __future__ import annotations` here: FastAPI reads the real type of
# chat_completion's argument to validate request bodies (422 instead of a 500).

import errno
import os
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

import litserve as ls
from fastapi import BackgroundTasks, HTTPException
from fastapi.exceptions import RequestValidationError

from src import errors, flags
from src.config import ServingSettings, load_settings
from src.deployment.http_guard import ReadDeadlineProtocol, RequestGuard, validation_error
from src.deployment.schemas import API_KEY_ENV, ChatRequest
from src.devices import check_serving_precision, cpu_cores
from src.errors import UserError
from src.model_folder import ModelFolder, inspect_model_folder, model_to_serve


class ChatSpec(ls.OpenAISpec):  # type: ignore[misc]
    """OpenAI's chat completions route, validating requests as ChatRequest (limits, one choice, no tools)."""

    def __init__(self, max_tokens: int) -> None:
        super().__init__()
        self.max_tokens = max_tokens

    async def chat_completion(self, request: ChatRequest, background_tasks: BackgroundTasks) -> Any:
        asked = request.asked_tokens()
        if asked is not None and asked > self.max_tokens:
            raise HTTPException(422, f"max_tokens {asked} exceeds this server's limit of {self.max_tokens}")
        return await super().chat_completion(request, background_tasks)


class ChatAPI(ls.LitAPI):  # type: ignore[misc]
    def __init__(self, model: ModelFolder, serving: ServingSettings, threads: int) -> None:
        super().__init__(spec=ChatSpec(serving.max_tokens))
        self.model = model
        self.precision = serving.precision
        self.default_max_tokens = serving.default_max_tokens
        self.threads = threads

    def setup(self, device: str) -> None:
        import torch  # heavy: only in the worker

        from src.deployment.generator import Generator

        torch.set_num_threads(self.threads)
        self.generator = Generator(self.model, device, self.precision)
        print(
            f"worker ready on {device}: {self.generator.precision}, {self.threads} CPU threads, "
            f"base model {self.model.base_model} with the run's LoRA adapters merged",
            flush=True,
        )

    def predict(self, request: ChatRequest, context: dict[str, Any]) -> Iterator[dict[str, Any]]:
        stream = self.generator.stream(
            request.turns(),
            max_tokens=request.asked_tokens() or self.default_max_tokens,
            temperature=request.temperature if request.temperature is not None else 1.0,
            top_p=request.top_p if request.top_p is not None else 1.0,
            stop=request.stops(),
        )
        previous: str | None = None
        for piece in stream:  # one piece behind: the last one carries the usage counts
            if previous is not None:
                yield {"role": "assistant", "content": previous}
            previous = piece
        usage = {"prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.completion_tokens,
                 "total_tokens": stream.prompt_tokens + stream.completion_tokens}  # fmt: skip
        yield {"role": "assistant", "content": previous or "", **usage}


def threads_per_worker(serving: ServingSettings) -> int:
    if serving.threads_per_worker is not None:
        return serving.threads_per_worker
    return max(1, cpu_cores() // serving.workers_per_device)


def build_server(serving: ServingSettings, model: ModelFolder) -> ls.LitServer:
    api = ChatAPI(model, serving, threads_per_worker(serving))
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
        # No max_payload_size: RequestGuard is the one limit (LitServe's own check turns a chunked
        # body's overflow into a 500).
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
    args = flags.SERVE.parse(sys.argv[1:] if argv is None else argv)
    serving = load_settings(flags=flags.SERVE.settings_flags(args)).serving
    ensure_port_free(serving.host, serving.port)
    check_serving_precision(serving.precision, serving.accelerator)  # before the worker loads torch
    model = inspect_model_folder(model_to_serve(serving.model_dir))
    print(
        f"Serving {model.path} on http://{serving.host}:{serving.port}/v1/chat/completions "
        f"(OpenAI-compatible; base model {model.base_model}, at most {serving.max_tokens} new tokens a request)",
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
    errors.run(main)
