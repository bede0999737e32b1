"""Many users at once, through the real server: conversations decoded side by side, and places freed by
clients that leave. On a run trained for one step, which answers at length (the smoke run ends its answers
after a few tokens)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from src.models.train_model import train
from src.task import TASK
from src.task.schemas import ROUTE
from tests.helpers.models import smoke_settings
from tests.helpers.processes import started
from tests.helpers.server import Server, start_server, wait_until_healthy
from tests.task.samples import EXACT_SERVING

PLACES = 8
LONG = {"model": "local", "messages": [{"role": "user", "content": "What is the opposite of big?"}],
        "temperature": 0, "max_tokens": 400}  # fmt: skip


@pytest.fixture(scope="module")
def chatty_server(smoke_assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of a one-step run: 8 places, no queue (a 9th request at once gets a 503)."""
    output_dir = tmp_path_factory.mktemp("one-step")
    run = output_dir / str(train(smoke_settings(smoke_assets, output_dir, max_steps=1), TASK)["run_id"])
    server = start_server(run, *EXACT_SERVING, SERVING__MAX_SEQUENCES=str(PLACES), SERVING__MAX_QUEUED="0")
    with started(server.process):
        yield wait_until_healthy(server)
    server.log.unlink(missing_ok=True)


def test_eight_streaming_clients_are_served_side_by_side(chatty_server: Server) -> None:
    """Not one after another: at some moment at least 4 of the 8 streams are between their first chunk and
    their end (with one conversation at a time, at most 1 would be)."""
    spans: list[tuple[float, float]] = []

    def one_client() -> None:
        with OpenAI(base_url=f"{chatty_server.url}/v1", api_key="none", max_retries=0, timeout=120) as client:
            first = None
            for chunk in client.chat.completions.create(**LONG, stream=True):  # type: ignore[call-overload]
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.monotonic()
            assert first is not None
            spans.append((first, time.monotonic()))

    threads = [threading.Thread(target=one_client) for _ in range(PLACES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert len(spans) == PLACES
    moments = sorted([(begin, 1) for begin, _ in spans] + [(end, -1) for _, end in spans])
    in_flight = peak = 0
    for _, change in moments:
        in_flight += change
        peak = max(peak, in_flight)
    assert peak >= 4, f"at most {peak} streams at once: {spans}"


def test_clients_that_leave_free_their_places_at_once(chatty_server: Server) -> None:
    """8 streams fill the 8 places (a 9th request gets 503 with Retry-After); the 8 clients leave after their
    first chunk, and a new request is served at once: their conversations were stopped, not decoded to their
    end (each would run for seconds)."""
    body = json.dumps({**LONG, "stream": True}).encode()
    with httpx.Client(base_url=chatty_server.url, timeout=60) as client:
        streams = [client.stream("POST", ROUTE, content=body) for _ in range(PLACES)]
        opened = [stream.__enter__() for stream in streams]  # each answered 200: admitted, decoding
        # at once, while the 8 are decoding (a slow machine reading their first pieces first gave a 400-token
        # answer of the tiny model time to end and free a place)
        refused = client.post(ROUTE, json={**LONG, "max_tokens": 3})
        for response in opened:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert any('"content": "' in line and '"content": ""' not in line for line in lines), "a first piece"
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"]
        for stream in streams:
            stream.__exit__(None, None, None)
        time.sleep(0.5)
        answered = client.post(ROUTE, json={**LONG, "max_tokens": 3})
        assert answered.status_code == 200, answered.text
