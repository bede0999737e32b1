"""The pipes between the API servers and the workers, on real pipes in one process: requests
arrive whole and in order whatever their size, a full pipe never blocks the event loop that
writes it, and answers reach an event loop as they are written. The server that runs through
them is tests/integration/test_serve.py."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from queue import Empty
from typing import Any

import pytest

from src.deployment.pipes import ATOMIC_WRITE, RequestPipe, ResponsePipes

CONTEXT = multiprocessing.get_context("spawn")


def request(uid: str, size: int = 10) -> tuple[int, str, float, dict[str, str]]:
    return (0, uid, 0.0, {"text": "x" * size})


def put_all(pipe: RequestPipe, items: list[Any]) -> None:
    """Put every item from a thread, failing the test if a put blocks (the event loop must not)."""

    def write() -> None:
        for item in items:
            pipe.put(item)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(timeout=30)
    assert not writer.is_alive(), "put() blocked"


def test_requests_arrive_whole_and_in_order_whatever_their_size() -> None:
    pipe = RequestPipe(CONTEXT)
    sizes = [10, ATOMIC_WRITE * 3, 10, 300_000, 10]  # a large one goes through the backlog thread
    items = [request(f"r{index}", size) for index, size in enumerate(sizes)]
    put_all(pipe, items)
    assert [pipe.get(timeout=10) for _ in items] == items


def test_a_full_pipe_does_not_block_the_writer_and_loses_nothing() -> None:
    pipe = RequestPipe(CONTEXT)
    items = [request(f"r{index}", 100_000 if index % 3 == 0 else 50) for index in range(60)]  # ~2 MB unread
    put_all(pipe, items)
    assert [pipe.get(timeout=10) for _ in items] == items


def test_an_empty_pipe_raises_empty() -> None:
    pipe = RequestPipe(CONTEXT)
    with pytest.raises(Empty):
        pipe.get_nowait()
    with pytest.raises(Empty):
        pipe.get(timeout=0.05)
    pipe.put(request("late"))
    assert pipe.get_nowait() == request("late")


def test_answers_reach_the_event_loop_as_they_are_written() -> None:
    pipes = ResponsePipes(consumers=2, context=CONTEXT)
    answers = [("uid-small", ("ok", 1)), ("uid-large", ("x" * 300_000, 1))]

    def send_all() -> None:
        for answer in answers:
            pipes.send(answer, consumer_id=1)

    async def receive() -> list[Any]:
        first = asyncio.create_task(pipes.areceive(consumer_id=1))
        await asyncio.sleep(0)  # reading before anything was written
        writer = threading.Thread(target=send_all)
        writer.start()
        got = [await asyncio.wait_for(first, 10), await asyncio.wait_for(pipes.areceive(consumer_id=1), 10)]
        writer.join()
        with pytest.raises(Empty):
            await pipes.areceive(consumer_id=0, timeout=0.05)  # the other API server's pipe
        return got

    assert asyncio.run(receive()) == answers
