"""How the server's worker takes and answers its batches: whatever is queued when it is free.

LitServe 0.2.19's batched loop waits up to `batch_timeout` for every batch to fill, polling
its queue each millisecond, so a lone request always waits the whole timeout, and with a
timeout of 0 the loop spins on a core while the queue is empty (on 2 cores, a core the
HTTP server and the model need). This loop blocks until a request arrives, then takes every
request already queued up to max_batch_size and, when serving.batch_timeout is above 0,
waits at most that long for more. Under load the batches form by themselves, from what
arrived while the previous batch ran; a lone request starts at once.

It then answers a batch as LitServe's loop does (decode, batch, predict, unbatch, encode; a
504 for a request that waited past serving.timeout; an error answer for each request of a
batch that failed), calling the API's methods directly: LitServe's loop inspects each
method's signature at every call to pass a `context` this API does not take (five
inspections for a lone request, 0.1-0.4 ms of its latency in interleaved A/Bs on 2 cores).
"""

from __future__ import annotations

import logging
import time
from queue import Empty, Queue
from typing import Any

from fastapi import HTTPException
from litserve import LitAPI
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.transport.base import MessageTransport
from litserve.utils import LitAPIStatus, LoopResponseType, PickleableHTTPException

log = logging.getLogger(__name__)

IDLE_WAIT = 1.0  # seconds the worker sleeps on an empty queue before it looks again


class DrainingLoop(BatchedLoop):  # type: ignore[misc]
    def run_batched_loop(
        self, lit_api: LitAPI, request_queue: Queue[Any], transport: MessageTransport, *args: Any, **kwargs: Any
    ) -> None:
        while True:
            try:
                payloads, timed_out = self.get_batch_requests(lit_api, request_queue, transport)
            except _StopLoopError:
                return
            for response_queue_id, uid in timed_out:
                late = HTTPException(504, "Request timed out")
                self.put_response(transport, response_queue_id, uid, late, LitAPIStatus.ERROR, LoopResponseType.REGULAR)
            if payloads:
                self.answer(lit_api, payloads, transport)

    def answer(self, lit_api: LitAPI, payloads: list[tuple[Any, ...]], transport: MessageTransport) -> None:
        response_queue_ids, uids, inputs = zip(*payloads, strict=True)
        try:
            outputs = lit_api.unbatch(lit_api.predict(lit_api.batch([lit_api.decode_request(x) for x in inputs])))
            if len(outputs) != len(inputs):
                raise HTTPException(500, f"predict/unbatch gave {len(outputs)} outputs for {len(inputs)} requests")
            answers = [lit_api.encode_response(output) for output in outputs]
        except HTTPException as error:
            for response_queue_id, uid in zip(response_queue_ids, uids, strict=True):
                pickleable = PickleableHTTPException.from_exception(error)
                self.put_response(
                    transport, response_queue_id, uid, pickleable, LitAPIStatus.ERROR, LoopResponseType.REGULAR
                )
            return
        except Exception as error:
            log.exception("the model failed on a batch of %d requests", len(inputs))
            for response_queue_id, uid in zip(response_queue_ids, uids, strict=True):
                self.put_error_response(transport, response_queue_id, uid, error, LoopResponseType.REGULAR)
            return
        for response_queue_id, uid, answer in zip(response_queue_ids, uids, answers, strict=True):
            self.put_response(transport, response_queue_id, uid, answer, LitAPIStatus.OK, LoopResponseType.REGULAR)

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
