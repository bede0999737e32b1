"""The classifier's POST /predict against one real LitServe server on 127.0.0.1 (started once per test run):
its answers and the texts it refuses; tests/task/integration/test_api.py has the API class in process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.evaluation import predict
from src.task.classifier import Classifier
from tests.helpers.processes import call
from tests.helpers.server import Server
from tests.task.samples import reviews, write_jsonl

TEXTS = [
    "great wonderful superb film",
    "awful boring dull mess, hated it",
    "the plot was quite moving and the cast brilliant",
    "tedious",
] * 16


def test_prediction_schema(client: httpx.Client) -> None:
    response = client.post("/predict", json={"text": "a charming, delightful movie"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"label", "score", "probabilities"}
    assert body["label"] in {"neg", "pos"}
    assert 0.0 <= body["score"] <= 1.0
    assert body["score"] == max(body["probabilities"].values())
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_concurrent_requests_match_in_process_predictions(server: Server, trained_model: Path) -> None:
    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post("/predict", json={"text": text}) for text in TEXTS))

    responses = asyncio.run(send_all())
    assert len(responses) == 64
    assert all(response.status_code == 200 for response in responses)
    expected = Classifier(trained_model, precision="fp32").predict(TEXTS)
    for response, prediction in zip(responses, expected, strict=True):
        assert response.json()["label"] == prediction.label
        assert response.json()["score"] == pytest.approx(prediction.score, abs=1e-4)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"text": 5}', 422),
        (b'{"text": ""}', 422),
        (b'{"text": "   "}', 422),
        (b'{"text": "fine", "extra": 1}', 422),
    ],
    ids=["wrong-type", "empty", "blank", "extra-field"],
)
def test_a_bad_text_gets_4xx_and_server_survives(client: httpx.Client, body: bytes, status: int) -> None:
    response = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert client.get("/health").status_code == 200


# --- Bodies that parse as JSON but cannot be echoed back, and other hostile input ---


@pytest.mark.parametrize(
    "body",
    [
        b'{"text": NaN}',
        b'{"text": 1e999999}',
        b'{"text": -Infinity}',
        b'{"text": "\\ud800"}',
        b'{"text": "ok \\udfff"}',
        b'{"text": "fine", "extra": NaN}',
        b'{"text": ' + b"9" * 5000 + b"}",
    ],
    ids=["nan", "huge-float", "minus-inf", "surrogate", "low-surrogate", "nan-extra", "5000-digit-int"],
)
def test_unechoable_texts_get_4xx_and_server_survives(client: httpx.Client, body: bytes) -> None:
    response = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]
    assert client.get("/health").status_code == 200


JSON_LEAVES = (
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, "\ud800", "a\udfff", " "])  # the usual suspects
    | st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(exclude_categories=()), max_size=20)  # surrogates included
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
BODIES = JSON_VALUES | st.fixed_dictionaries({"text": JSON_VALUES}, optional={"extra": JSON_VALUES})


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(body=BODIES)
def test_no_json_body_gets_a_5xx(client: httpx.Client, body: object) -> None:
    # json.dumps writes NaN/Infinity and escapes lone surrogates as \udxxx: what a client can send.
    content = json.dumps(body, allow_nan=True).encode()
    response = client.post("/predict", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code < 500, (content[:200], response.text[:500])
    text = body.get("text") if isinstance(body, dict) and set(body) == {"text"} else None
    valid = isinstance(text, str) and bool(text.strip()) and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    assert (response.status_code == 200) == valid, (content[:200], response.text[:500])


def test_a_few_through_a_real_server(trained_model: Path, client: httpx.Client, tmp_path: Path) -> None:
    # fp32 on both sides: under int8 (the CPU default) activation scales follow the batch, and
    # one request at a time is a batch of one while predict runs batches of 16.
    texts = reviews(6, repeat=2)
    output = tmp_path / "out.jsonl"
    source = write_jsonl(tmp_path / "in.jsonl", texts)
    assert (
        call(predict.main, str(source), "-o", str(output), "--model-dir", str(trained_model), "--precision", "fp32")
        == 0
    )
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    answers = [client.post("/predict", json={"text": text}).json() for text in texts]  # the server runs fp32
    for row, answer in zip(rows, answers, strict=True):
        assert row["predicted_label"] == answer["label"]
        assert row["predicted_score"] == pytest.approx(answer["score"], abs=1e-5)
        assert row["probability_pos"] == pytest.approx(answer["probabilities"]["pos"], abs=1e-5)
