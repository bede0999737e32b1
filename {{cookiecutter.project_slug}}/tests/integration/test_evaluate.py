"""Evaluation on the tiny offline model: the report every run publishes, and `uv run evaluate`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image

from src import runs
from src.deployment.classifier import Classifier
from src.evaluation import report
from src.evaluation.evaluate import EVALUATION
from src.models.train_model import train
from tests.conftest import clean_env, only_error_line, run_module
from tests.integration.conftest import make_settings


def read(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(path.read_text())
    return value


def pixels(path: Path) -> np.ndarray:
    decoded: np.ndarray = image.imread(str(path), format="png")
    return decoded


def assert_report_complete(run_dir: Path) -> None:
    """report.md embeds pictures that exist, decode as PNGs of the intended size, and show something."""
    text = (run_dir / report.REPORT).read_text()
    embedded = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert {report.CURVES, report.LEARNING_RATE, report.CONFUSION} <= set(embedded), text
    sizes = {
        report.CURVES: report.CURVES_INCHES,
        report.LEARNING_RATE: report.LEARNING_RATE_INCHES,
        report.CONFUSION: report.confusion_inches(2),
    }
    for name, (width, height) in sizes.items():
        picture = pixels(run_dir / name)
        assert picture.shape[:2] == (round(height * report.DPI), round(width * report.DPI)), name
        assert picture[..., :3].std() > 0.05, f"{name} looks blank"


def test_every_run_publishes_its_report(trained_model: Path) -> None:
    assert_report_complete(trained_model)
    trained, evaluation = read(trained_model / "metrics.json"), read(trained_model / EVALUATION)
    assert evaluation["accuracy"] == trained["accuracy"], "the report's numbers are the training evaluation's"
    assert evaluation["macro_f1"] == pytest.approx(trained["f1"])
    assert evaluation["model_dir"] == str(trained_model), "named as published, not as the staging folder"
    matrix = np.array(evaluation["confusion_matrix"])
    assert matrix.sum() == trained["eval_samples"] == evaluation["count"]
    assert evaluation["mistakes"] == matrix.sum() - np.trace(matrix)
    text = (trained_model / report.REPORT).read_text()
    assert f"| {evaluation['accuracy']:.4f} |" in text
    assert "## Worst mistakes" in text
    assert ".tmp-" not in text


def test_training_evaluates_at_the_interval(trained_model: Path) -> None:
    history = report.log_history(trained_model)
    eval_steps = [entry["step"] for entry in history if "eval_loss" in entry]
    interval = 20  # configs/smoke.yaml training.eval_steps
    final = read(trained_model / "metrics.json")["global_step"]
    during = list(range(interval, final + 1, interval))
    if final % interval:
        during.append(final)  # the Trainer evaluates the last step too
    assert eval_steps[: len(during)] == during, "evaluations during the run"
    assert eval_steps[-1] == final, "and the final evaluation (metrics.json)"
    assert any("loss" in entry and "learning_rate" in entry for entry in history)


def test_worst_mistakes_are_the_most_confident_wrong_predictions(trained_model: Path) -> None:
    worst = read(trained_model / EVALUATION)["worst_mistakes"]
    assert isinstance(worst, list)
    assert worst, "the smoke model is not perfect"
    scores = [mistake["score"] for mistake in worst]
    assert scores == sorted(scores, reverse=True)
    predictions = Classifier(trained_model, precision="fp32").predict([mistake["text"] for mistake in worst])
    for mistake, prediction in zip(worst, predictions, strict=True):
        assert prediction.label == mistake["predicted_label"] != mistake["true_label"]
        assert prediction.score == pytest.approx(mistake["score"], abs=1e-5)
    csv_lines = (trained_model / "mistakes.csv").read_text().splitlines()
    assert csv_lines[0] == "true_label,predicted_label,score,text"


def test_evaluate_command_equals_training_metrics(trained_model: Path) -> None:
    (trained_model / report.REPORT).unlink()
    env = clean_env(TRAINING__OUTPUT_DIR=str(trained_model.parent))
    result = run_module("src.evaluation.evaluate", trained_model.name, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)
    assert printed["accuracy"] == read(trained_model / "metrics.json")["accuracy"]
    assert printed["report"] == str(trained_model / report.REPORT)
    assert_report_complete(trained_model)


def test_evaluate_on_another_file(trained_model: Path, tmp_path: Path) -> None:
    texts = ["great wonderful superb film", "awful boring dull mess", "a moving, brilliant cast", "tedious"]
    rows = "text,sentiment\n" + "".join(
        f'"{text}",{label}\n' for text, label in zip(texts, ["pos", 0, 1, "neg"], strict=True)
    )
    data = tmp_path / "held out.csv"
    data.write_text(rows)
    result = run_module("src.evaluation.evaluate", "--model-dir", str(trained_model), "--data", str(data),
                        "--label-column", "sentiment")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    target = trained_model / "eval-held-out.csv"
    evaluation = read(target / EVALUATION)
    expected = [prediction.label for prediction in Classifier(trained_model, precision="fp32").predict(texts)]
    truth = ["pos", "neg", "pos", "neg"]
    assert evaluation["accuracy"] == np.mean([e == t for e, t in zip(expected, truth, strict=True)])
    assert evaluation["count"] == 4
    assert (target / report.REPORT).is_file()
    assert (target / report.CONFUSION).is_file()
    assert read(trained_model / EVALUATION)["count"] == 200, "the run's own report is left alone"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["no-such-run"], "no run 'no-such-run'"),
        (["--data", "{dir}/missing.jsonl"], "missing.jsonl does not exist"),
        (["--data", "{dir}/labels.jsonl"], r"line 2: label 'maybe' in 'label' is none of the model's labels"),
        (["--data", "{dir}/plain.txt"], "plain text has no labels"),
    ],
)
def test_evaluate_errors_are_one_line(trained_model: Path, tmp_path: Path, args: list[str], fragment: str) -> None:
    (tmp_path / "labels.jsonl").write_text('{"text": "fine", "label": "pos"}\n{"text": "meh", "label": "maybe"}\n')
    (tmp_path / "plain.txt").write_text("fine\n")
    env = clean_env(TRAINING__OUTPUT_DIR=str(trained_model.parent))
    result = run_module("src.evaluation.evaluate", *[arg.format(dir=tmp_path) for arg in args], env=env, timeout=120)
    assert result.returncode == 2
    assert re.search(fragment, only_error_line(result.stderr))


def test_keep_best_model_publishes_the_best_checkpoint(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    settings = make_settings(smoke_assets, tmp_path, max_steps=60, eval_steps=10, save_steps=10,
                             keep_best_model=True, best_model_metric="accuracy")  # fmt: skip
    metrics = train(settings)
    history = report.log_history(tmp_path / str(metrics["run_id"]))
    during = [entry["eval_accuracy"] for entry in history if "eval_accuracy" in entry][:-1]
    assert len(during) == 6
    assert metrics["accuracy"] == max(during), "the published model is the best checkpoint, not the last"
    assert runs.resolve_model_dir(tmp_path / "latest").name == metrics["run_id"]


@pytest.mark.slow
def test_train_local_smoke_then_evaluate(tmp_path: Path) -> None:
    """The issue's done-when, through the commands: train-local --smoke, then evaluate the new run."""
    env = clean_env(TRAINING__OUTPUT_DIR=str(tmp_path), TRAINING__MAX_STEPS="40")
    trained = run_module("src.models.launch", "--smoke", env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    [run_dir] = runs.finished_runs(tmp_path)
    assert (run_dir / report.REPORT).is_file()
    assert len([path for path in run_dir.glob("*.png") if pixels(path).size]) >= 2
    evaluated = run_module("src.evaluation.evaluate", env=env)  # no RUN: the latest
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout)["accuracy"] == read(run_dir / "metrics.json")["accuracy"]
