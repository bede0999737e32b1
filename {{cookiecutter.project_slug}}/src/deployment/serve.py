"""`uv run serve`: the task's LitServe API as a server process, and everything around it.

Before anything starts, the port is checked and the model folder is found and inspected as the
task says (a folder that cannot serve fails with one `error:` line instead of a server that
answers wrongly), and the task chooses what its workers run. Then LitServe serves the task's
API (its route: `/predict`, `/v1/chat/completions`) behind http_guard.py's limits, requests and
answers in pipes (pipes.py); Ctrl-C exits 130, SIGTERM 143, and a model worker or HTTP process
that dies while serving stops the server with one line; killed itself, serve takes every process
it started along (src/lifeline.py). This module stays light (LitServe forks its
API-server processes from this one): torch and transformers load only in the inference
worker. Set LIT_SERVER_API_KEY to require the key on every route, /health, /docs and
/openapi.json too (`X-API-Key`, or `Authorization: Bearer <key>`).
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

import litserve as ls
from fastapi.exceptions import RequestValidationError

from src import errors, lifeline, model_folder
from src.contract import Task
from src.deployment import compat
from src.deployment.http_guard import API_KEY_ENV, RequestGuard, validation_error
from src.errors import UserError
from src.settings import ServingSettings, load_settings


def build_server(api: ls.LitAPI, serving: ServingSettings) -> ls.LitServer:
    """LitServe with the pipes between its processes (the LitServe it was tested with), behind the guard."""
    tested = compat.litserve_tested()
    guard = {
        "api_key": os.environ.get(API_KEY_ENV) or None,
        "body_timeout": serving.read_timeout,
        "max_body_bytes": serving.max_payload_bytes,
        "forward_key": not tested,  # LitServe's own check reads X-API-Key; PipeServer leaves checking to the guard
    }
    server_class: type[ls.LitServer] = compat.pipe_server() if tested else ls.LitServer
    server = server_class(
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


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _hold_stop_signals() -> None:
    # Around a fork: a Ctrl-C to the process group must not reach a child before it has set its own handlers.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def _release_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _quiet_child_signals() -> None:
    # LitServe forks its API servers (multiprocessing its queue manager) from this process.
    # This process reports Ctrl-C or SIGTERM once and stops them; they stop without a traceback,
    # and with this process, however it ends (src/lifeline.py).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _release_stop_signals()
    lifeline.end_with_parent()


def run_server(server: ls.LitServer, serving: ServingSettings) -> None:
    """Serve until stopped. Ctrl-C and SIGTERM raise until the shutdown begins (PipeServer's, or this
    function's clean-up); after that they wait for it: a signal that cut it short could leave LitServe's
    queue manager up, and the exit would wait for it forever. Ctrl-C still ends in KeyboardInterrupt
    (LitServe swallows it: exit 0)."""
    server.stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        errors.on_stop_signal(signum, frame, hold=server.stopping)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    errors.quiet_swallowed_signals()  # the watch below acts on a Ctrl-C whose exception a finalizer dropped
    os.register_at_fork(
        before=_hold_stop_signals, after_in_parent=_release_stop_signals, after_in_child=_quiet_child_signals
    )
    stopped = threading.Event()
    threading.Thread(target=_watch, args=(server, stopped), name="serve-watch", daemon=True).start()
    try:
        server.run(host=serving.host, port=serving.port, generate_client_file=False, pretty_logs=False,
                   **compat.http_protocol(serving.read_timeout))  # fmt: skip
    except (EOFError, OSError):
        # A worker that died makes LitServe shut its queue manager down under its own feet; so can a signal.
        if not (errors.signalled() or dead_worker(server) or getattr(server, "dead_http_process", None)):
            raise
    finally:
        server.stopping = True
        stopped.set()
        _stop_what_is_left(server)
    errors.raise_if_signalled()
    if dead := getattr(server, "dead_http_process", None):
        raise UserError(f"{dead}, so the server stopped: start it again (if nothing killed it, see `dmesg`)")
    if dead := dead_worker(server):
        raise UserError(
            f"{dead}, so the server stopped: if nothing killed it, it ran out of memory (see `dmesg`):"
            " serve with fewer serving.workers_per_device or on a larger machine"
        )


def _stop_what_is_left(server: ls.LitServer) -> None:
    """Stop the processes LitServe's shutdown left: model workers still loading when it was stopped during
    start-up (first: they crash with a traceback once the queue manager is gone), then anything else."""
    _stop([worker for worker in getattr(server, "inference_workers", None) or [] if worker.is_alive()])
    _stop(multiprocessing.active_children())


def _stop(processes: Sequence[BaseProcess]) -> None:
    """Terminate these processes, give each 5 s to end, then kill what is left."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


def _ended(code: int | None) -> str | None:
    """How a process ended by itself (not stopped by this process), said; None while it runs or if stopped."""
    if code is None or code == 0 or code == -signal.SIGTERM:
        return None
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def _watch(server: ls.LitServer, stopped: threading.Event) -> None:
    """Stop the server once an HTTP process (LitServe's API server) has died (LitServe watches only its
    workers), or a Ctrl-C or SIGTERM has been noted that did not stop it (its exception raised in a
    finalizer, which Python prints and drops)."""
    while not stopped.wait(0.5):
        for process in (getattr(server, "api_servers", None) or {}).values():
            if server.stopping:  # LitServe's shutdown ends them now (SIGKILL after its timeout): not news
                break
            if how := _ended(getattr(process, "exitcode", None)):
                server.dead_http_process = f"the HTTP process (pid {process.pid}) {how}"
                break
        if getattr(server, "dead_http_process", None) or (errors.signalled() and not server.stopping):
            with contextlib.suppress(Exception):  # the queue manager may be going down already
                server._shutdown_event.set()  # LitServe's run() returns and stops every other process
            return


def dead_worker(server: ls.LitServer) -> str | None:
    """The first inference worker that ended by itself while serving (not stopped by this process), said."""
    for worker in getattr(server, "inference_workers", None) or []:
        if how := _ended(worker.exitcode):
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


def main(argv: Sequence[str], task: Task[Any]) -> int:
    serving_task = task.serving
    args = serving_task.command.parse(argv)
    serving = load_settings(task.settings, flags=serving_task.command.settings_flags(args)).serving
    ensure_port_free(serving.host, serving.port)
    folder = task.inspect(model_folder.resolve(serving.model_dir, task.model_files))
    engine = serving_task.choose(serving, folder)  # before any worker loads torch: a bad choice is one line
    for line in (*engine.notes, *compat.notes()):
        print(line, flush=True)
    print(f"Serving run {folder.path.name}, {model_folder.which(serving.model_dir)} ({folder.path}), on "
          f"http://{serving.host}:{serving.port}{serving_task.route} with {engine} ({serving_task.describe(folder)})",
          flush=True)  # fmt: skip
    api = serving_task.api(folder, serving, engine, serving.worker_threads)
    with tempfile.TemporaryDirectory(prefix="serve-status-") as status:
        api.status_dir = Path(status)  # a worker that cannot start says why there (worker.py)
        api.server_pid = os.getpid()  # the worker's parent: it ends with this process (worker.py)
        try:
            run_server(build_server(api, serving), serving)
        except RuntimeError as error:
            if "workers failed to start" not in str(error):
                raise
            message = errors.status_message(Path(status))
            raise UserError(
                message or f"{folder.path}: the model worker failed to start (its error is above)"
            ) from None
    return 0
