"""The pipes between LitServe's API servers and its inference workers (PipeServer).

LitServe 0.2.19 carries every request and every response through queues kept by a
multiprocessing Manager process: each put and each get is a round trip to that process, and
an API server waits for each response on a thread (`asyncio.to_thread`). PipeServer keeps
LitServe's processes, loops, routes and batching, and swaps those queues for pipes:
- RequestPipe (API servers -> workers): the event loop writes a request straight into the
  pipe when it fits whole (a non-blocking write of at most PIPE_BUF bytes is all or nothing);
  a larger request, or one that meets a full pipe, waits in a backlog that a thread of that
  API server writes, so the event loop never blocks. Workers read under a lock.
- ResponsePipes (workers -> API servers): one pipe per API server, read by its event loop as
  data arrives (add_reader); workers write under a lock.
It also leaves the API key to RequestGuard, which checks it once on every route (LitServe's own
per-route check would be a second one, on a thread), and leaves out LitServe's gzip wrapper (a prediction is about
100 bytes; only answers over 1000 are compressed). Measured with the serving benchmark on 2
cores: the Manager queues cost a lone request about 1.5 ms more than these pipes.
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import os
import pickle
import select
import signal
import struct
import threading
import time
from multiprocessing.connection import Connection
from queue import Empty
from typing import Any

import litserve as ls
from litserve.transport.base import MessageTransport
from starlette.middleware.gzip import GZipMiddleware

from src import errors

ATOMIC_WRITE = select.PIPE_BUF  # bytes a pipe takes whole or not at all
FRAME_HEADER = struct.Struct("!Q")  # a frame: its length, then a pickle


def _frame(item: Any) -> bytes:
    data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME_HEADER.pack(len(data)) + data


def _write_frame(fd: int, frame: bytes) -> None:
    """All of it, waiting for room in the pipe when its end is non-blocking."""
    view = memoryview(frame)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


def _read_frame(reader: Connection) -> Any:
    """The next whole frame (a writer writes each frame whole, under its lock)."""
    (size,) = FRAME_HEADER.unpack(_read_exactly(reader.fileno(), FRAME_HEADER.size))
    return pickle.loads(_read_exactly(reader.fileno(), size))  # noqa: S301 - from this server's own processes


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, missing = [], size
    while missing:
        chunk = os.read(fd, missing)
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


class RequestPipe:
    """A queue for LitServe's workers (put, get, get_nowait) that never blocks the writer's event loop."""

    def __init__(self, context: Any) -> None:
        self._reader, self._writer = context.Pipe(duplex=False)
        self._read_lock = context.Lock()
        self._write_lock = context.Lock()  # one frame at a time, across the API servers
        self._backlog: collections.deque[bytes] = collections.deque()
        self._waiting = threading.Condition()
        self._feeder: threading.Thread | None = None  # per writing process, started by its first put

    def __getstate__(self) -> dict[str, Any]:
        state = {**self.__dict__, "_backlog": collections.deque(), "_feeder": None}
        del state["_waiting"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _waiting=threading.Condition())

    def put(self, item: Any) -> None:
        frame = _frame(item)
        with self._waiting:
            if self._feeder is None:
                os.set_blocking(self._writer.fileno(), False)
                self._feeder = threading.Thread(target=self._write_backlog, name="request-pipe", daemon=True)
                self._feeder.start()
            if not self._backlog and len(frame) <= ATOMIC_WRITE and self._write_lock.acquire(block=False):
                try:
                    os.write(self._writer.fileno(), frame)
                    return
                except BlockingIOError:  # the pipe is full: the backlog thread waits for room
                    pass
                finally:
                    self._write_lock.release()
            self._backlog.append(frame)
            self._waiting.notify()

    def _write_backlog(self) -> None:
        while True:
            with self._waiting:
                self._waiting.wait_for(lambda: bool(self._backlog))
                frame = self._backlog[0]
            with self._write_lock:
                _write_frame(self._writer.fileno(), frame)
            with self._waiting:
                self._backlog.popleft()  # only now: put() writes directly only behind an empty backlog

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._read_lock.acquire(block, timeout if block else None):
            raise Empty
        try:
            remaining = 0.0 if not block else None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._reader.poll(remaining):
                raise Empty
            return _read_frame(self._reader)
        finally:
            self._read_lock.release()

    def get_nowait(self) -> Any:
        return self.get(block=False)


class ResponsePipes(MessageTransport):  # type: ignore[misc]
    """LitServe's transport for answers: one pipe per API server (its consumer id)."""

    def __init__(self, consumers: int, context: Any) -> None:
        self._pipes: list[tuple[Connection, Connection]] = [context.Pipe(duplex=False) for _ in range(consumers)]
        self._write_locks = [context.Lock() for _ in range(consumers)]  # several workers answer one API server
        self._inboxes: dict[int, asyncio.Queue[Any]] = {}  # per reading process, made by its event loop
        self._closed = False

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_inboxes": {}}

    def send(self, item: Any, consumer_id: int) -> None:
        frame = _frame(item)
        with self._write_locks[consumer_id]:
            _write_frame(self._pipes[consumer_id][1].fileno(), frame)

    async def areceive(self, consumer_id: int, timeout: float | None = None, block: bool = True) -> Any:
        if self._closed:
            raise asyncio.CancelledError("transport closed")
        inbox = self._inbox(consumer_id)
        if timeout is None:
            return await inbox.get()
        try:
            return await asyncio.wait_for(inbox.get(), timeout)
        except TimeoutError:
            raise Empty from None

    def _inbox(self, consumer_id: int) -> asyncio.Queue[Any]:
        if consumer_id not in self._inboxes:
            inbox: asyncio.Queue[Any] = asyncio.Queue()
            reader = self._pipes[consumer_id][0]
            asyncio.get_running_loop().add_reader(reader.fileno(), _drain, reader, inbox)
            self._inboxes[consumer_id] = inbox
        return self._inboxes[consumer_id]

    def close(self, send_sentinel: bool = True, **kwargs: Any) -> None:
        self._closed = True


def _drain(reader: Connection, inbox: asyncio.Queue[Any]) -> None:
    # Every message that has arrived; a worker writes a whole message under its lock.
    while reader.poll():
        inbox.put_nowait(_read_frame(reader))


class PipeServer(ls.LitServer):  # type: ignore[misc]
    """A LitServer whose requests and answers travel in pipes instead of Manager queues."""

    def _init_manager(self, num_api_servers: int) -> Any:
        manager = super()._init_manager(num_api_servers)  # still keeps the workers' status and the shutdown event
        context = multiprocessing.get_context("spawn")  # as LitServe starts its workers
        for path in self.litapi_request_queues:
            self.litapi_request_queues[path] = RequestPipe(context)
        self._transport = ResponsePipes(num_api_servers, context)
        return manager

    def launch_inference_worker(self, lit_api: ls.LitAPI) -> Any:
        # A worker starts with Ctrl-C blocked (its mask is this thread's), so that a Ctrl-C while it imports
        # does not end it with a traceback; it ignores Ctrl-C from its setup on (worker.py): serve reports
        # it and stops the workers. A Ctrl-C meanwhile is raised here once the worker has what it needs.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            with errors.signals_held():
                return super().launch_inference_worker(lit_api)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    def _register_middleware(self) -> None:
        # LitServe gzips answers over 1000 bytes; a prediction is about 100, yet every request
        # passed through the gzip middleware's wrapper.
        middlewares: list[Any] = self.middlewares  # type: ignore[has-type]  # set by LitServer.__init__
        self.middlewares = [m for m in middlewares if not (isinstance(m, tuple) and m[0] is GZipMiddleware)]
        super()._register_middleware()

    def _start_server(self, *args: Any, **kwargs: Any) -> Any:
        self.api_servers = super()._start_server(*args, **kwargs)  # watched by serve.py: one killed stops it
        return self.api_servers

    def _perform_graceful_shutdown(self, manager: Any, uvicorn_workers: Any, shutdown_reason: str = "normal") -> None:
        self.stopping = True  # serve.py: signals from now on wait for this shutdown instead of cutting it short
        if "died" in shutdown_reason:  # a worker died: its requests will get no answer, drop them at once
            self.uvicorn_graceful_timeout = 1
        super()._perform_graceful_shutdown(manager, uvicorn_workers, shutdown_reason)

    def setup_auth(self, lit_api: ls.LitAPI | None = None) -> Any:
        # RequestGuard (http_guard.py) checks the API key once, on every route, before LitServe sees the
        # request; LitServe's own check would be a second one per request, on a thread of its own.
        return _no_check


async def _no_check() -> None:
    return None
