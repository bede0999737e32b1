"""The classifier's own pieces without a model: its settings fields, its metrics, the texts predict reads."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from src.config import DEFAULT_SETTINGS_FILE, SettingsError, load_settings
from src.errors import UserError
from src.evaluation import predict
from src.task import TASK, metrics


@pytest.mark.parametrize(
    ("variable", "text", "field", "expected"),
    [
        ("DATA__TEXT_COLUMN", "0", "data.text_column", "0"),
        ("DATA__LABELS", "[no, yes]", "data.labels", ["no", "yes"]),
        ("TRAINING__KEEP_BEST_MODEL", "true", "training.keep_best_model", True),
    ],
)
def test_the_classifiers_variables_are_typed_by_their_field(
    variable: str, text: str, field: str, expected: object
) -> None:
    settings = load_settings(environ={variable: text})
    section, name = field.split(".")
    assert getattr(getattr(settings, section), name) == expected


@pytest.mark.parametrize("value", ["[" * 2000 + "]" * 2000, "{a: *b}"])
def test_a_hostile_list_override_is_a_validation_error(value: str) -> None:
    with pytest.raises(SettingsError, match="DATA__LABELS"):
        load_settings(environ={"DATA__LABELS": value})


def test_classification_report_by_hand() -> None:
    truth = [0, 0, 0, 1, 1, 2]
    predicted = [0, 0, 1, 1, 0, 1]
    report = metrics.classification_report(truth, predicted, ["a", "b", "c"])
    assert report["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [0, 1, 0]]
    assert report["accuracy"] == pytest.approx(3 / 6)
    assert report["per_class"]["a"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                                        "f1": pytest.approx(2 / 3), "support": 3}  # fmt: skip
    assert report["per_class"]["b"]["precision"] == pytest.approx(1 / 3)
    assert report["per_class"]["b"]["recall"] == pytest.approx(1 / 2)
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    f1_b = 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)
    assert report["macro_f1"] == pytest.approx((2 / 3 + f1_b + 0.0) / 3)
    assert report["macro_f1"] == pytest.approx(metrics.macro_f1(truth, predicted))


def test_cross_entropy_is_the_mean_over_the_examples() -> None:
    logits = [[0.0, math.log(3.0)], [math.log(4.0), 0.0], [0.0, 0.0]]  # probabilities 3/4, 4/5 and 1/2 of the truth
    expected = -(math.log(3 / 4) + math.log(4 / 5) + math.log(1 / 2)) / 3
    assert metrics.cross_entropy(logits, [1, 0, 1]) == pytest.approx(expected)
    assert metrics.cross_entropy([[1000.0, 0.0]], [0]) == pytest.approx(0.0), "no overflow on large logits"


def test_macro_f1_averages_only_labels_that_occur() -> None:
    # Label 2 of 3 never appears: a 0 for it would drag the average down for nothing.
    report = metrics.classification_report([0, 1, 1], [0, 1, 1], ["a", "b", "c"])
    assert report["macro_f1"] == 1.0
    assert report["per_class"]["c"]["support"] == 0


@pytest.mark.parametrize(
    ("training", "fragment"),
    [
        ({"keep_best_model": True, "eval_steps": None}, "training.keep_best_model: needs evaluations"),
        (
            {"keep_best_model": True, "eval_steps": 30, "save_steps": 200},
            r"training.keep_best_model: needs save_steps \(200\) to be a multiple of eval_steps \(30\)",
        ),
        ({"best_model_metric": "loss"}, "training.best_model_metric"),
        ({"eval_steps": 0}, "training.eval_steps"),
    ],
)
def test_evaluation_settings_are_checked(training: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        load_settings(DEFAULT_SETTINGS_FILE, environ={}, overrides={"training": training})


def test_keep_best_model_with_matching_steps_is_accepted() -> None:
    training = {"keep_best_model": True, "eval_steps": 50, "save_steps": 200}
    settings = load_settings(DEFAULT_SETTINGS_FILE, environ={}, overrides={"training": training})
    assert settings.training.keep_best_model


@pytest.mark.parametrize(
    ("rows", "flags", "problem"),
    [
        ('{"text": "fine"}\n', ["--text-column", "review"], r"line 1: no text in 'review'"),
        ('{"text": "fine"}\n{"text": "\\ud800"}\n', [], r"line 2: the text in 'text' is not valid Unicode"),
    ],
    ids=["another-column", "lone-surrogate"],
)
def test_predict_names_a_row_without_usable_text_before_loading_the_model(
    tmp_path: Path, rows: str, flags: list[str], problem: str
) -> None:
    (tmp_path / "in.jsonl").write_text(rows, encoding="utf-8")  # JSON's escape of a lone surrogate stays an escape
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(UserError, match=problem):
        predict.main([str(tmp_path / "in.jsonl"), "--model-dir", str(model), *flags], TASK)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.jsonl", "model"], "nothing written"
