"""`uv run serve`: the fine-tuned classifier as a LitServe REST API.

POST /predict {"text": "..."} -> {"label": "pos", "score": 0.97, "probabilities": {...}}.
Concurrent requests are batched (serving.max_batch_size, serving.batch_timeout: batching.py
takes what is queued when the worker is free, so a lone request never waits); the
worker truncates where the run was trained and picks the precision for its device
(classifier.py). Before anything starts, the port is checked and the model folder is
inspected (src/model_folder.py): a folder that cannot serve fails with one `error:` line
instead of a server that answers wrongly. This module stays light (LitServe forks its
API-server processes from this one): torch and transformers load only in the inference
worker. Set LIT_SERVER_API_KEY to require an `X-API-Key` header on every route, /health,
/docs and /openapi.json too; http_guard.py holds that and the other request limits.
"""

# No `from __future__ import annotations` here: LitServe reads the real type of
# decode_request's argument to validate request bodies (422 instead of a 500).

import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import litserve as ls
from fastapi.exceptions import RequestValidationError

from src import errors, flags, runs
from src.config import ServingSettings, load_settings
from src.deployment import onnx_engine
from src.deployment.batching import DrainingLoop
from src.deployment.http_guard import ReadDeadlineProtocol, RequestGuard, validation_error
from src.deployment.onnx_engine import Choice
from src.deployment.pipes import PipeServer
from src.deployment.schemas import API_KEY_ENV, Prediction, PredictRequest
from src.devices import (
    CPU_SERVING_PRECISION,
    check_serving_precision,
    check_serving_runtime,
    cpu_cores,
    serving_precision,
    serving_runtime,
    surely_cpu_only,
)
from src.errors import UserError
from src.model_folder import ModelFolder, inspect_model_folder, model_to_serve


class ClassifierAPI(ls.LitAPI):  # type: ignore[misc]
    def __init__(self, model: ModelFolder, serving: ServingSettings, engine: Choice, threads: int) -> None:
        batched = serving.max_batch_size > 1
        super().__init__(
            max_batch_size=serving.max_batch_size, batch_timeout=serving.batch_timeout,
            loop=DrainingLoop() if batched else "auto",
        )  # fmt: skip
        self.model_dir = model.path
        self.precision = engine.precision
        self.runtime = engine.runtime
        self.threads = threads

    def setup(self, device: str) -> None:
        import torch  # heavy: only in the worker

        from src.deployment.classifier import Classifier

        torch.set_num_threads(self.threads)
        runtime = serving_runtime(self.runtime, self.precision, torch.device(device).type)
        self.classifier = Classifier(self.model_dir, device, self.precision, runtime, self.threads)
        print(
            f"worker ready on {device}: {runtime} {self.classifier.precision}, {self.threads} CPU threads, "
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
    return max(1, cpu_cores() // serving.workers_per_device)


def describe_engine(engine: Choice) -> str:
    if "auto" in (engine.runtime, engine.precision):
        return "the runtime and precision its device suits (the worker's line says which)"
    return f"{engine.runtime} {engine.precision}"


def build_server(serving: ServingSettings, model: ModelFolder, engine: Choice) -> ls.LitServer:
    api = ClassifierAPI(model, serving, engine, threads_per_worker(serving))
    guard = {
        "api_key": os.environ.get(API_KEY_ENV) or None,
        "body_timeout": serving.read_timeout,
        "max_body_bytes": serving.max_payload_bytes,
    }
    server = PipeServer(
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


def choose_engine(serving: ServingSettings, model: ModelFolder) -> Choice:
    """The runtime and precision the workers run: on CPU, ONNX Runtime's export checked against PyTorch first.

    The check imports torch, which this process must not (LitServe forks it): a child process
    (onnx_engine.py) makes it and writes its choice to a file, unless the stamps of an earlier
    start already tell (same export, same weights). On a GPU the worker resolves `auto` itself.
    """
    runtime, precision = serving.runtime, serving.precision
    on_cpu = serving.accelerator == "cpu" or (serving.accelerator == "auto" and surely_cpu_only(os.environ))
    if on_cpu:
        if serving_runtime(runtime, precision, "cpu") == "pytorch":
            return Choice("pytorch", serving_precision(precision, "cpu"))
        if runtime == precision == "auto":
            known = onnx_engine.stamped_choice(model.path)
        else:
            known = onnx_engine.stamped_explicit(model.path, serving_precision(precision, "cpu"))
        if known is not None:
            return known
    elif serving.accelerator != "auto" or runtime == "pytorch" or precision not in ("auto", CPU_SERVING_PRECISION):
        return Choice(runtime, precision)  # not ONNX Runtime: the worker resolves auto for its device
    with tempfile.TemporaryDirectory(prefix="serve-engine-") as scratch:
        answer = Path(scratch) / "choice.json"
        arguments = [str(model.path), runtime, precision, serving.accelerator, str(threads_per_worker(serving))]
        # A session of its own: Ctrl-C reaches this process only, which reports it and kills the child.
        command = [sys.executable, "-m", "src.deployment.onnx_engine", *arguments, str(answer)]
        if code := subprocess.run(command, check=False, start_new_session=True).returncode:
            raise EngineCheckError(code)
        return Choice(**runs.read_json(answer))


class EngineCheckError(Exception):
    """The export or its check ended with an exit code; it printed its own error line."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


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
    except (EOFError, OSError):
        # A worker that died makes LitServe shut its queue manager down under its own feet.
        if interrupted or not dead_worker(server):
            raise
    finally:
        # Stopped during start-up, LitServe leaves its workers loading the model, and they
        # crash with a traceback once its queue manager is gone: stop them first.
        for worker in getattr(server, "inference_workers", None) or []:
            if worker.is_alive():
                worker.terminate()
    if interrupted:
        raise KeyboardInterrupt
    if dead := dead_worker(server):
        raise UserError(
            f"{dead}, so the server stopped: if nothing killed it, it ran out of memory (see `dmesg`):"
            " serve with fewer serving.workers_per_device or on a larger machine"
        )


def dead_worker(server: ls.LitServer) -> str | None:
    """The first inference worker that ended by itself while serving (not stopped by this process), said."""
    for worker in getattr(server, "inference_workers", None) or []:
        code = worker.exitcode
        if code is None or code == 0 or code == -signal.SIGTERM:
            continue
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        return f"the model worker (pid {worker.pid}) {how}"
    return None


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
    check_serving_runtime(serving.runtime, serving.precision, serving.accelerator)
    model = inspect_model_folder(model_to_serve(serving.model_dir))
    try:
        engine = choose_engine(serving, model)
    except EngineCheckError as failed:
        return failed.code
    for note in engine.notes:
        print(note, flush=True)
    print(
        f"Serving {model.path} on http://{serving.host}:{serving.port}/predict with {describe_engine(engine)} "
        f"(labels {', '.join(model.labels)}; truncating at {model.max_length} tokens)",
        flush=True,
    )
    try:
        run_server(build_server(serving, model, engine), serving)
    except RuntimeError as error:
        if "workers failed to start" not in str(error):
            raise
        raise UserError(f"{model.path}: the model worker failed to start (its error is above)") from None
    return 0


if __name__ == "__main__":
    errors.run(main)
