"""The classifier's POST /predict against one real LitServe server on 127.0.0.1 (shared by the whole run):
its answers, the texts it refuses, and truncation where the run was trained."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.config import load_settings
from src.models.train_model import train
from src.task import TASK
from src.task import parity as export_parity
from src.task.api import ClassifierAPI
from src.task.classifier import Classifier
from src.task.folder import inspect
from src.task.schemas import PredictRequest
from tests.helpers.models import smoke_settings
from tests.helpers.server import Server

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


# --- Training and serving agree ---


@pytest.fixture(scope="module")
def short_model(smoke_assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke model trained with MODEL__MAX_LENGTH=32."""
    output_dir = tmp_path_factory.mktemp("short")
    settings = smoke_settings(smoke_assets, output_dir, environ={"MODEL__MAX_LENGTH": "32"}, max_steps=6)
    return output_dir / str(train(settings, TASK)["run_id"])


def test_served_model_truncates_at_the_trained_length(short_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert json.loads((short_model / "run.json").read_text())["max_length"] == 32
    prefix = "the film was great and the cast brilliant but the plot " * 4  # well over 32 tokens
    long_texts = [prefix + "awful boring dull terrible " * 200, prefix + "superb moving delightful " * 200]
    serving = load_settings(environ={}).serving
    engine = export_parity.choose(short_model, serving.runtime, serving.precision, threads=1)  # as serve's start
    worker = ClassifierAPI(inspect(short_model), serving, engine, threads=1)
    worker.setup("cpu")  # what each inference worker of the server does
    assert "truncating at 32 tokens" in capsys.readouterr().out
    predictions = [worker.predict(worker.decode_request(PredictRequest(text=text))) for text in long_texts]
    answers = [worker.encode_response(prediction) for prediction in predictions if not isinstance(prediction, list)]
    assert len(answers) == 2, "one answer per request (no batching here)"
    # Everything after the 32nd token is ignored: texts that differ only there get the same answer.
    assert answers[0]["probabilities"] == pytest.approx(answers[1]["probabilities"], abs=1e-6)
    assert all(len(ids) == 32 for ids in Classifier(short_model).encode(long_texts))
