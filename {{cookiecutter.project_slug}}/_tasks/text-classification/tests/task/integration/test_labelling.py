"""A classifier's `uv run predict` on the tiny offline model: the server's classifier, runtime and answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.devices import cpu_cores
from src.evaluation import predict
from src.task import onnx_export
from src.task.classifier import Classifier
from tests.helpers.processes import call, only_error_line
from tests.task.samples import reviews, write_jsonl


@pytest.mark.parametrize("runtime", ["auto", "pytorch"])
def test_1000_rows_equal_the_servers_classifier(
    trained_model: Path, tmp_path: Path, runtime: str, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = reviews(1000)
    source = write_jsonl(tmp_path / "reviews.jsonl", texts)
    assert call(predict.main, str(source), "--model-dir", str(trained_model), "--runtime", runtime) == 0
    rows = [json.loads(line) for line in (tmp_path / "reviews.predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 1000
    assert [row["id"] for row in rows] == list(range(1000)), "input order and columns kept"
    engine = "onnxruntime" if runtime == "auto" else "pytorch"  # auto on CPU: int8 through ONNX Runtime, as served
    assert f"({engine} int8 on cpu)" in capsys.readouterr().err
    # The server's worker, same runtime and precision (the export predict made and checked).
    expected = Classifier(trained_model, precision="int8", runtime=engine, threads=cpu_cores()).predict(texts)
    for row, prediction in zip(rows, expected, strict=True):
        assert row["predicted_label"] == prediction.label
        assert row["predicted_score"] == prediction.score, "same micro-batches: the same numbers"
        assert row["probability_neg"] + row["probability_pos"] == pytest.approx(1.0, abs=1e-5)
        assert row["predicted_score"] == max(row["probability_neg"], row["probability_pos"])


def foreign_export(run_copy: Path, smoke_assets: dict[str, Path], precision: str, tmp_path: Path) -> None:
    """The run's ONNX export replaced by one of another model, newer than the weights: it fails parity."""
    onnx_export.export(smoke_assets["model"], precision, tmp_path / f"foreign-{precision}.onnx")
    target = onnx_export.onnx_file(run_copy, precision)
    target.parent.mkdir(exist_ok=True)
    target.write_bytes((tmp_path / f"foreign-{precision}.onnx").read_bytes())


def test_an_int8_export_that_disagrees_with_pytorch_is_not_used_and_the_next_runtime_answers(
    run_copy: Path, smoke_assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Settings on auto: ONNX Runtime fp32 answers instead, and predict says so in one line."""
    foreign_export(run_copy, smoke_assets, "int8", tmp_path)
    source = write_jsonl(tmp_path / "reviews.jsonl", reviews(20))
    assert call(predict.main, str(source), "--model-dir", str(run_copy)) == 0
    err = capsys.readouterr().err
    assert "ONNX Runtime int8 disagrees with PyTorch fp32" in err
    assert "not serving it" in err
    assert "(onnxruntime fp32 on cpu)" in err
    assert len((tmp_path / "reviews.predictions.jsonl").read_text().splitlines()) == 20


def test_pytorch_answers_when_no_onnx_export_agrees(
    run_copy: Path, smoke_assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for precision in ("int8", "fp32"):
        foreign_export(run_copy, smoke_assets, precision, tmp_path)
    source = write_jsonl(tmp_path / "reviews.jsonl", reviews(20))
    assert call(predict.main, str(source), "--model-dir", str(run_copy)) == 0
    err = capsys.readouterr().err
    assert err.count("not serving it") == 2
    assert "(pytorch fp32 on cpu)" in err


def test_an_onnx_export_asked_for_that_disagrees_with_pytorch_is_refused_like_serve_refuses_it(
    run_copy: Path, smoke_assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--runtime onnxruntime --precision int8 given: predict stops before classifying."""
    foreign_export(run_copy, smoke_assets, "int8", tmp_path)
    source = write_jsonl(tmp_path / "reviews.jsonl", reviews(20))
    argv = ["--model-dir", str(run_copy), "--runtime", "onnxruntime", "--precision", "int8"]
    assert call(predict.main, str(source), *argv) == 2
    line = only_error_line(capsys.readouterr().err)
    assert "disagrees with PyTorch fp32" in line
    assert "--runtime pytorch" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "foreign-int8.onnx", "reviews.jsonl", "runs"], "no output"  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--runtime", "tensorrt"], "serving.runtime"),
        (["--runtime", "onnxruntime", "--precision", "fp16"], "onnxruntime serves fp32 or int8"),
    ],
    ids=["unknown", "half-precision"],
)
def test_a_runtime_that_cannot_run_is_refused(
    trained_model: Path, tmp_path: Path, argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "reviews.jsonl", reviews(5))
    assert call(predict.main, str(source), "--model-dir", str(trained_model), *argv) == 2
    assert words in only_error_line(capsys.readouterr().err)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["reviews.jsonl"], "no output"
