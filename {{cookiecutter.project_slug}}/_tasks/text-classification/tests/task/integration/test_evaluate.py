"""A classifier's evaluation on the tiny offline model: the report every run publishes, and `uv run evaluate`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image

from src import model_folder
from src.devices import cpu_cores
from src.evaluation import evaluate, report
from src.evaluation.report import EVALUATION
from src.models.train_model import train
from src.task import TASK, onnx_export, report_card
from src.task.classifier import Classifier
from tests.helpers.models import smoke_settings
from tests.helpers.processes import call, only_error_line


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
    assert {report.CURVES, report.LEARNING_RATE, report_card.CONFUSION} <= set(embedded), text
    sizes = {
        report.CURVES: report.CURVES_INCHES,
        report.LEARNING_RATE: report.LEARNING_RATE_INCHES,
        report_card.CONFUSION: report_card.confusion_inches(2),
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


def test_evaluate_command_equals_training_metrics(
    run_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (run_copy / report.REPORT).unlink()
    monkeypatch.setenv("TRAINING__OUTPUT_DIR", str(run_copy.parent))
    assert call(evaluate.main, run_copy.name) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["accuracy"] == read(run_copy / "metrics.json")["accuracy"]
    assert printed["report"] == str(run_copy / report.REPORT)
    assert_report_complete(run_copy)


def test_evaluate_on_another_file(run_copy: Path, trained_model: Path, tmp_path: Path) -> None:
    texts = ["great wonderful superb film", "awful boring dull mess", "a moving, brilliant cast", "tedious"]
    rows = "text,sentiment\n" + "".join(
        f'"{text}",{label}\n' for text, label in zip(texts, ["pos", 0, 1, "neg"], strict=True)
    )
    data = tmp_path / "held out.csv"
    data.write_text(rows)
    code = call(evaluate.main, "--model-dir", str(run_copy), "--data", str(data), "--label-column", "sentiment")
    assert code == 0
    target = run_copy / "eval-held-out.csv"
    evaluation = read(target / EVALUATION)
    expected = [prediction.label for prediction in Classifier(run_copy, precision="fp32").predict(texts)]
    truth = ["pos", "neg", "pos", "neg"]
    assert evaluation["accuracy"] == np.mean([e == t for e, t in zip(expected, truth, strict=True)])
    assert evaluation["count"] == 4
    assert (target / report.REPORT).is_file()
    assert (target / report_card.CONFUSION).is_file()
    assert read(run_copy / EVALUATION) == read(trained_model / EVALUATION), "the run's own report is left alone"


@pytest.mark.parametrize(("runtime", "engine"), [("auto", "onnxruntime"), ("pytorch", "pytorch")])
def test_evaluate_as_served_in_int8(run_copy: Path, tmp_path: Path, runtime: str, engine: str) -> None:
    """--precision int8 measures what the CPU server answers: ONNX Runtime (the run's export, checked), or PyTorch."""
    texts = ["great wonderful superb film", "awful boring dull mess", "a moving, brilliant cast", "tedious"]
    data = tmp_path / "held.jsonl"
    truth = ["pos", "neg", "pos", "neg"]
    rows = [json.dumps({"text": text, "label": label}) for text, label in zip(texts, truth, strict=True)]
    data.write_text("\n".join(rows) + "\n")
    argv = ["--model-dir", str(run_copy), "--data", str(data), "--precision", "int8", "--runtime", runtime]
    assert call(evaluate.main, *argv) == 0
    evaluation = read(run_copy / "eval-held.jsonl" / EVALUATION)
    assert (evaluation["runtime"], evaluation["precision"]) == (engine, "int8")
    assert (onnx_export.onnx_file(run_copy, "int8").is_file()) == (engine == "onnxruntime"), "exported only when used"
    served = Classifier(run_copy, precision="int8", runtime=engine, threads=cpu_cores()).predict(texts)
    assert evaluation["accuracy"] == np.mean([p.label == t for p, t in zip(served, truth, strict=True)])
    assert f"{engine} int8 on cpu" in (run_copy / "eval-held.jsonl" / report.REPORT).read_text()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--data", "{dir}/labels.jsonl"], r"line 2: label 'maybe' in 'label' is none of the model's labels"),
        (["--data", "{dir}/plain.txt"], "plain text has no labels"),
        (["--runtime", "tensorrt"], "serving.runtime: 'tensorrt' is not one of"),
        (["--runtime", "onnxruntime", "--precision", "bf16"], "onnxruntime serves fp32 or int8"),
    ],
)
def test_the_classifiers_evaluate_errors_are_one_line(
    trained_model: Path, tmp_path: Path, args: list[str], fragment: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    (tmp_path / "labels.jsonl").write_text('{"text": "fine", "label": "pos"}\n{"text": "meh", "label": "maybe"}\n')
    (tmp_path / "plain.txt").write_text("fine\n")
    monkeypatch.setenv("TRAINING__OUTPUT_DIR", str(trained_model.parent))  # the run is read-only: nothing written
    assert call(evaluate.main, *[arg.format(dir=tmp_path) for arg in args]) == 2
    assert re.search(fragment, only_error_line(capsys.readouterr().err))


def test_keep_best_model_publishes_the_best_checkpoint(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    every = 4
    settings = smoke_settings(smoke_assets, tmp_path, max_steps=4 * every, eval_steps=every, save_steps=every,
                              keep_best_model=True, best_model_metric="accuracy")  # fmt: skip
    metrics = train(settings, TASK)
    history = report.log_history(tmp_path / str(metrics["run_id"]))
    during = [entry["eval_accuracy"] for entry in history if "eval_accuracy" in entry][:-1]
    assert len(during) == settings.training.max_steps // every
    assert metrics["accuracy"] == max(during), "the published model is the best checkpoint, not the last"
    assert model_folder.resolve(tmp_path / "latest", TASK.model_files).name == metrics["run_id"]
