"""The worker's batching loop on a real queue: what is queued goes at once, up to max_batch_size;
batch_timeout is the most it waits for more; a stop and an expired request are handled as
LitServe's own loop handles them; answers, a failed batch and a 504 go back through the real
response pipes."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import threading
import time
from queue import Queue
from typing import Any

import litserve as ls
import pytest
from fastapi import HTTPException
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.utils import LitAPIStatus

from src.deployment import batching
from src.deployment.batching import DrainingLoop
from src.deployment.pipes import ResponsePipes


def api(
    max_batch_size: int = 4, batch_timeout: float = 0.0, request_timeout: float = 30.0, kind: type = ls.LitAPI
) -> ls.LitAPI:
    lit_api = kind(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    lit_api.request_timeout = request_timeout  # LitServer sets it from its timeout
    return lit_api


def queued(*uids: str, age: float = 0.0) -> Queue[Any]:
    queue: Queue[Any] = Queue()
    for uid in uids:
        queue.put((0, uid, time.monotonic() - age, {"text": uid}))
    return queue


def take(lit_api: ls.LitAPI, queue: Queue[Any]) -> tuple[list[str], list[str]]:
    payloads, timed_out = DrainingLoop().get_batch_requests(lit_api, queue, transport=None)
    return [uid for _, uid, _ in payloads], [uid for _, uid in timed_out]


def test_what_is_queued_goes_at_once_up_to_the_batch_size() -> None:
    queue = queued("a", "b", "c", "d", "e", "f")
    assert take(api(max_batch_size=4), queue) == (["a", "b", "c", "d"], [])
    assert take(api(max_batch_size=4), queue) == (["e", "f"], [])


def test_a_lone_request_does_not_wait_for_company() -> None:
    late = queued()
    threading.Timer(0.3, lambda: late.put((0, "late", time.monotonic(), {}))).start()
    assert take(api(), queued("lone")) == (["lone"], [])
    assert take(api(), late) == (["late"], []), "the next call blocks until a request comes"


def test_batch_timeout_is_the_most_a_batch_waits_for_more() -> None:
    queue = queued("first")
    threading.Timer(0.1, lambda: queue.put((0, "second", time.monotonic(), {}))).start()
    assert take(api(batch_timeout=0.5), queue) == (["first", "second"], [])
    started = time.monotonic()
    assert take(api(max_batch_size=2, batch_timeout=2.0), queued("x", "y")) == (["x", "y"], [])
    assert time.monotonic() - started < 1.0, "a full batch does not wait out the timeout"


def test_an_empty_queue_gives_an_empty_batch_after_the_idle_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "IDLE_WAIT", 0.05)
    assert take(api(), queued()) == ([], [])


def test_the_stop_signal_ends_the_loop() -> None:
    queue = queued("a")
    queue.put(_SENTINEL_VALUE)
    with pytest.raises(_StopLoopError):
        take(api(), queue)


def test_requests_past_the_timeout_are_set_aside() -> None:
    assert take(api(request_timeout=1.0), queued("old", age=5.0)) == ([], ["old"])
    assert take(api(request_timeout=-1), queued("old", age=5.0)) == (["old"], []), "-1: no timeout"


class Doubler(ls.LitAPI):  # type: ignore[misc]
    """Doubles each text; fails the whole batch on "boom" (a bug) or "teapot" (an HTTP error)."""

    def decode_request(self, request: dict[str, str]) -> str:
        return request["text"]

    def batch(self, texts: list[str]) -> list[str]:
        return texts

    def unbatch(self, outputs: list[str]) -> list[str]:
        return outputs

    def predict(self, texts: list[str]) -> list[str]:
        if "boom" in texts:
            raise ValueError("boom")
        if "teapot" in texts:
            raise HTTPException(418, "no coffee")
        return [text * 2 for text in texts]

    def encode_response(self, output: str) -> dict[str, str]:
        return {"echo": output}


def answers(queue: Queue[Any], lit_api: ls.LitAPI, expected: int) -> dict[str, tuple[Any, Any]]:
    """Run the worker's loop on what is queued; the answers by uid, as the API server reads them."""
    pipes = ResponsePipes(consumers=1, context=multiprocessing.get_context("spawn"))
    worker = threading.Thread(target=DrainingLoop().run_batched_loop, args=(lit_api, queue, pipes))
    worker.start()

    async def read() -> dict[str, tuple[Any, Any]]:
        found: dict[str, tuple[Any, Any]] = {}
        while len(found) < expected:
            uid, (data, status, _kind, _worker) = await pipes.areceive(consumer_id=0, timeout=10)
            found[uid] = (data, status)
        return found

    try:
        return asyncio.run(read())
    finally:
        queue.put(_SENTINEL_VALUE)  # the loop stops
        worker.join(timeout=10)
        assert not worker.is_alive()


def test_the_loop_answers_each_request_and_a_504_for_one_that_waited_too_long() -> None:
    lit_api = api(request_timeout=1.0, kind=Doubler)
    queue = queued("a", "b")
    queue.put((0, "old", time.monotonic() - 5.0, {"text": "old"}))
    got = answers(queue, lit_api, expected=3)
    assert got["a"] == ({"echo": "aa"}, LitAPIStatus.OK)
    assert got["b"] == ({"echo": "bb"}, LitAPIStatus.OK)
    late, status = got["old"]
    assert status == LitAPIStatus.ERROR
    assert (late.status_code, late.detail) == (504, "Request timed out")


@pytest.mark.parametrize(("text", "status_code"), [("boom", 500), ("teapot", 418)])
def test_a_failed_batch_gets_an_error_answer_for_each_request(text: str, status_code: int) -> None:
    lit_api = api(kind=Doubler)
    queue = queued("fine")
    queue.put((0, text, time.monotonic(), {"text": text}))
    got = answers(queue, lit_api, expected=2)
    assert set(got) == {"fine", text}, "one answer each, the innocent request included"
    for data, status in got.values():
        assert status == LitAPIStatus.ERROR
        error = pickle.loads(data) if isinstance(data, bytes) else data  # noqa: S301 - made by the loop above
        assert getattr(error, "status_code", 500) == status_code, error
