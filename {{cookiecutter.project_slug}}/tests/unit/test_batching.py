"""The worker's batching loop on a real queue: what is queued goes at once, up to max_batch_size;
batch_timeout is the most it waits for more; a stop and an expired request are handled as
LitServe's own loop handles them."""

from __future__ import annotations

import threading
import time
from queue import Queue
from typing import Any

import litserve as ls
import pytest
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError

from src.deployment import batching
from src.deployment.batching import DrainingLoop


def api(max_batch_size: int = 4, batch_timeout: float = 0.0, request_timeout: float = 30.0) -> ls.LitAPI:
    lit_api = ls.LitAPI(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
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
    assert take(api(batch_timeout=2.0), queue) == (["first", "second"], [])
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
