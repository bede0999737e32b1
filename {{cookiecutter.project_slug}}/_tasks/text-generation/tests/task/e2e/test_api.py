"""The OpenAI-compatible API against one real LitServe server on 127.0.0.1 (started once per test
run), the official `openai` client included: what it answers and what it refuses (long conversations in
process: tests/task/integration/test_api.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI, UnprocessableEntityError
from openai.types.chat import ChatCompletionMessageParam

from src.config import load_settings
from src.task.schemas import ROUTE
from tests.conftest import API_KEY
from tests.helpers.server import Server
from tests.task.samples import engine

QUESTION = [{"role": "user", "content": "What is the opposite of early?"}]
ASKED: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION[0]["content"]}]  # as openai types it


@pytest.fixture
def openai_client(server: Server) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def expected(trained_model: Path) -> tuple[str, int, int]:
    """The in-process engine's greedy answer to QUESTION: (text, prompt tokens, completion tokens)."""
    with engine(trained_model) as opened:
        text, last = opened.complete(QUESTION, 40)
    return text, last.prompt_tokens, last.completion_tokens


def test_the_openai_client_streams_the_completion(openai_client: OpenAI, expected: tuple[str, int, int]) -> None:
    """As OpenAI streams: one id for every chunk, the reason it ended on the last choice, and the usage in a chunk
    of its own when stream_options.include_usage asks for it (and only then)."""
    chunks = list(openai_client.chat.completions.create(
        model="local", messages=ASKED, stream=True, temperature=0, max_tokens=40,
        stream_options={"include_usage": True},
    ))  # fmt: skip
    pieces = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert len(pieces) >= 2, f"streamed piece by piece, not at once: {pieces}"
    assert "".join(pieces) == expected[0], "the server answers what the in-process engine does"
    assert len({chunk.id for chunk in chunks}) == 1
    *_, ended, counted = chunks
    assert ended.choices[0].finish_reason == "stop"
    assert counted.choices == []
    usage = counted.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == expected[1:]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    plain = list(openai_client.chat.completions.create(model="local", messages=ASKED, stream=True, temperature=0,
                                                       max_tokens=40))  # fmt: skip
    assert all(chunk.usage is None for chunk in plain)
    assert plain[-1].choices[0].finish_reason == "stop"


def test_the_openai_client_gets_a_whole_completion(openai_client: OpenAI, expected: tuple[str, int, int]) -> None:
    response = openai_client.chat.completions.create(model="local", messages=ASKED, temperature=0, max_tokens=40)
    assert response.choices[0].message.content == expected[0]
    assert response.choices[0].message.role == "assistant"
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == expected[1:]


def test_max_tokens_and_stop_end_the_completion(openai_client: OpenAI, expected: tuple[str, int, int]) -> None:
    short = openai_client.chat.completions.create(model="local", messages=ASKED, temperature=0, max_tokens=2)
    assert short.usage is not None
    assert short.usage.completion_tokens == 2
    assert expected[0].startswith(short.choices[0].message.content or "-")
    stopped = openai_client.chat.completions.create(model="local", messages=ASKED, temperature=0, stop=[" is"])
    assert stopped.choices[0].message.content == expected[0].split(" is")[0]


def test_sampling_answers_too(openai_client: OpenAI) -> None:
    response = openai_client.chat.completions.create(model="local", messages=ASKED, temperature=1.2, top_p=0.9,
                                                     max_tokens=10)  # fmt: skip
    assert response.usage is not None
    assert 1 <= response.usage.completion_tokens <= 10


def test_a_request_past_the_token_limit_is_refused(openai_client: OpenAI, client: httpx.Client) -> None:
    limit = load_settings(environ={}).serving.max_tokens
    with pytest.raises(UnprocessableEntityError):
        openai_client.chat.completions.create(model="local", messages=ASKED, max_tokens=limit + 1)
    response = client.post(ROUTE, content=chat(max_completion_tokens=limit + 1))
    assert response.status_code == 422
    assert response.json()["detail"] == f"max_tokens {limit + 1} exceeds this server's limit of {limit}"


def test_without_max_tokens_the_default_applies(client: httpx.Client, expected: tuple[str, int, int]) -> None:
    response = client.post(ROUTE, content=chat(temperature=0), timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == expected[0], "the model ends its turn well before the default"
    assert body["usage"]["prompt_tokens"] == expected[1]


def chat(**body: object) -> bytes:
    return json.dumps({"messages": QUESTION, **body}).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        json.dumps({"messages": []}).encode(),
        json.dumps({"messages": [{"role": "robot", "content": "hi"}]}).encode(),
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        json.dumps({"messages": [{"role": "user"}]}).encode(),
        json.dumps({"messages": "hello"}).encode(),
        chat(n=2),
        chat(max_tokens=0),
        chat(max_tokens=-5),
        chat(temperature=-1),
        chat(temperature=3),
        chat(top_p=0),
        chat(stop=["a", "b", "c", "d", "e"]),
        chat(stop="x" * 101),
        chat(stop=[""]),
        chat(tools=[{"type": "function", "function": {"name": "f"}}]),
        chat(response_format={"type": "json_object"}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}] * 600}).encode(),
        b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + b"9" * 5000 + b"}",
        b"[" * 20000 + b"]" * 20000,
    ],
    ids=["not-json", "empty", "no-turns", "unknown-role", "image-content", "no-content", "messages-text", "n-2",
         "zero-tokens", "negative-tokens", "cold", "hot", "top-p-0", "five-stops", "long-stop", "empty-stop", "tools",
         "json-format", "600-turns", "surrogate", "nan", "5000-digits", "deep-nesting"],
)  # fmt: skip
def test_hostile_bodies_get_4xx_and_the_server_survives(client: httpx.Client, body: bytes) -> None:
    response = client.post(ROUTE, content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, (body[:200], response.text[:500])
    assert client.post(ROUTE, content=chat(max_tokens=3, temperature=0)).status_code == 200


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_finish_reason_says_max_tokens_ended_it(openai_client: OpenAI, stream: bool) -> None:
    create = openai_client.chat.completions.create
    for tokens, reason in ((2, "length"), (40, "stop")):
        if stream:
            chunks = list(create(model="local", messages=ASKED, temperature=0, max_tokens=tokens, stream=True))
            assert chunks[-1].choices[0].finish_reason == reason
        else:
            answer = create(model="local", messages=ASKED, temperature=0, max_tokens=tokens)
            assert answer.choices[0].finish_reason == reason


@pytest.mark.parametrize(
    ("field", "value"),
    [("n", 2), ("tools", [{"type": "function", "function": {"name": "f"}}]), ("logprobs", True),
     ("top_logprobs", 3), ("logit_bias", {"5": 10}), ("presence_penalty", 0.5), ("frequency_penalty", -1),
     ("seed", 7), ("response_format", {"type": "json_object"}), ("no_such_field", 1)],
)  # fmt: skip
def test_what_the_engine_cannot_honour_is_refused_naming_the_field(
    client: httpx.Client, field: str, value: object
) -> None:
    response = client.post(ROUTE, content=chat(**{field: value}))
    assert response.status_code == 422, response.text
    assert field in response.text


TEXT_PARTS = [{"type": "text", "text": "What is the "}, {"type": "text", "text": "opposite of early?"}]


@pytest.mark.parametrize(
    "extra",
    [{"n": None}, {"model": None}, {"n": 1, "presence_penalty": 0, "logprobs": False, "seed": None},
     {"temperature": 1e-40}, {"messages": [{"role": "user", "content": TEXT_PARTS}]},
     {"messages": [{"role": "developer", "content": "You answer in one short sentence."}, *QUESTION]}],
    ids=["n-null", "model-null", "defaults-spelled-out", "temperature-1e-40", "text-parts", "developer-role"],
)  # fmt: skip
def test_what_openai_accepts_is_answered(client: httpx.Client, extra: dict[str, object],
                                          expected: tuple[str, int, int]) -> None:  # fmt: skip
    response = client.post(ROUTE, content=chat(**{"max_tokens": 40, "temperature": 0, **extra}))
    assert response.status_code == 200, response.text
    answer = response.json()["choices"][0]["message"]["content"]
    assert answer.startswith("The opposite of"), answer
    if "messages" not in extra:
        assert answer == expected[0], "a temperature under 1e-5 is greedy decoding"


def test_the_models_route_names_the_served_model(openai_client: OpenAI, trained_model: Path) -> None:
    assert [model.id for model in openai_client.models.list()] == [trained_model.name]
