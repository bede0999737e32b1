"""The classifier's serving API class in process, as each inference worker runs it: a run trained with a
short max_length is served truncated there (over HTTP: tests/task/e2e/test_api.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.config import load_settings
from src.models.train_model import train
from src.task import TASK
from src.task import parity as export_parity
from src.task.api import ClassifierAPI
from src.task.classifier import Classifier
from src.task.folder import inspect
from src.task.schemas import PredictRequest
from tests.helpers.models import smoke_settings


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
