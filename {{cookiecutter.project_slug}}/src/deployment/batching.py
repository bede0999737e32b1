"""How the server's worker takes its batches: whatever is queued when it is free, never a fixed wait.

LitServe 0.2.19's batched loop waits up to `batch_timeout` for every batch to fill, polling
its queue each millisecond, so a lone request always waits the whole timeout, and with a
timeout of 0 the loop spins on a core while the queue is empty (on 2 cores, a core the
HTTP server and the model need). This loop blocks until a request arrives, then takes every
request already queued up to max_batch_size and, when serving.batch_timeout is above 0,
waits at most that long for more. Under load the batches form by themselves, from what
arrived while the previous batch ran; a lone request starts at once.
"""

from __future__ import annotations

import time
from queue import Empty, Queue
from typing import Any

from litserve import LitAPI
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.transport.base import MessageTransport
from litserve.utils import LitAPIStatus, LoopResponseType

IDLE_WAIT = 1.0  # seconds the worker sleeps on an empty queue before it looks again


class DrainingLoop(BatchedLoop):  # type: ignore[misc]
    def get_batch_requests(
        self, lit_api: LitAPI, request_queue: Queue[Any], transport: MessageTransport
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, Any]]]:
        payloads: list[tuple[Any, ...]] = []
        timed_out: list[tuple[Any, Any]] = []
        try:
            item = request_queue.get(timeout=IDLE_WAIT)
        except Empty:
            return payloads, timed_out
        deadline = time.monotonic() + lit_api.batch_timeout
        while True:
            self._admit(item, lit_api, transport, payloads, timed_out)
            if len(payloads) + len(timed_out) >= lit_api.max_batch_size:
                break
            try:
                remaining = deadline - time.monotonic()
                item = request_queue.get(timeout=remaining) if remaining > 0 else request_queue.get_nowait()
            except Empty:
                break
        return payloads, timed_out

    def _admit(
        self, item: Any, lit_api: LitAPI, transport: MessageTransport,
        payloads: list[tuple[Any, ...]], timed_out: list[tuple[Any, Any]],
    ) -> None:  # fmt: skip
        if item == _SENTINEL_VALUE:  # the server is stopping
            raise _StopLoopError()
        response_queue_id, uid, queued_at, payload = item
        kind = LoopResponseType.STREAMING if lit_api.stream else LoopResponseType.REGULAR
        self.put_response(transport, response_queue_id, uid, (), LitAPIStatus.START, kind)
        waited = time.monotonic() - queued_at
        if lit_api.request_timeout not in (-1, False) and waited > lit_api.request_timeout:
            timed_out.append((response_queue_id, uid))  # answered 504 by the loop
        else:
            payloads.append((response_queue_id, uid, payload))
