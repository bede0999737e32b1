"""A deadline for a request's headers: uvicorn's httptools protocol, plus a timer.

uvicorn waits forever for request headers: for a connection's first request, and for the next
one on a kept-alive connection once its first bytes came (they cancel the keep-alive timer). A
client that sends half a request line would hold the connection. This builds on uvicorn's
HttpToolsProtocol and its `cycle` and `pipeline` attributes (compat.py uses it only on the
uvicorn versions it was tested with); the body has its own deadline in http_guard.RequestGuard.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class ReadDeadlineProtocol(HttpToolsProtocol):
    """The deadline starts when the connection opens and again when a response is complete."""

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
