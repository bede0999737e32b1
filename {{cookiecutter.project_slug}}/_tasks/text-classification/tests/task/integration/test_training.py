"""A classifier's training on the tiny offline model: its metrics, what it learns, what its data must hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers.trainer_utils import EvalPrediction

from src.models.train_model import train
from src.splits import DataError
from src.task import TASK
from src.task.classifier import Classifier
from src.task.training import compute_metrics
from tests.helpers.models import smoke_settings


def test_compute_metrics() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    labels = np.array([0, 1, 0, 0])
    metrics = compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert metrics["count"] == 4


def test_the_smoke_model_learns(trained_model: Path) -> None:
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.6, "the smoke task is learnable: near-chance accuracy means a broken pipeline"
    predictions = Classifier(trained_model).predict(["great wonderful superb film", "awful boring dull mess"])
    assert [prediction.label for prediction in predictions] == ["pos", "neg"]
    assert json.loads((trained_model / "run.json").read_text())["labels"] == ["neg", "pos"]


def test_label_column_names_what_the_data_has(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    settings = smoke_settings(smoke_assets, tmp_path)
    broken = settings.model_copy(update={"data": settings.data.model_copy(update={"label_column": "sentiment"})})
    with pytest.raises(DataError, match=r"'sentiment'.*\['label', 'text'\]|\['text', 'label'\]"):
        train(broken, TASK)
