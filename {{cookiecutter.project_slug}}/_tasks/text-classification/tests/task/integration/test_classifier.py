"""The in-process classifier the server's worker runs: precision per device, int8 against fp32."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from src.errors import UserError
from src.task.classifier import Classifier
from src.task.runtimes import CPU_SERVING_PRECISION, serving_precision

# Dynamic int8 quantization rounds weights and activations: answers move a little, labels
# flip only for texts near the decision boundary.
INT8_MAX_PROBABILITY_CHANGE = 0.05
INT8_MIN_LABEL_AGREEMENT = 0.97


def eval_texts(smoke_assets: dict[str, Path]) -> list[str]:
    lines = smoke_assets["eval"].read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines]


def test_cpu_gets_the_measured_default(trained_model: Path) -> None:
    assert serving_precision("auto", "cpu") == CPU_SERVING_PRECISION
    classifier = Classifier(trained_model)
    assert classifier.precision == CPU_SERVING_PRECISION
    if CPU_SERVING_PRECISION == "int8":
        quantized = torch.ao.nn.quantized.dynamic.Linear
        assert any(isinstance(module, quantized) for module in classifier.model.modules())
        assert not any(isinstance(module, torch.nn.Linear) for module in classifier.model.modules()), "all quantized"


def test_explicit_precision_wins_and_impossible_ones_are_refused(trained_model: Path) -> None:
    assert Classifier(trained_model, precision="fp32").model.dtype == torch.float32
    with pytest.raises(UserError, match="int8 runs on CPU only"):
        serving_precision("int8", "cuda")
    with pytest.raises(UserError, match=r"serving\.precision"):
        serving_precision("int4", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gets_half_precision(trained_model: Path) -> None:
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    classifier = Classifier(trained_model, "cuda")
    assert classifier.precision == {torch.bfloat16: "bf16", torch.float16: "fp16"}[expected]
    assert next(classifier.model.parameters()).dtype == expected
    full = Classifier(trained_model, "cuda", precision="fp32")
    texts = ["great wonderful film", "awful boring mess"]
    for half, exact in zip(classifier.predict(texts), full.predict(texts), strict=True):
        assert half.score == pytest.approx(exact.score, abs=0.02)


def test_int8_agrees_with_fp32_on_the_eval_split(trained_model: Path, smoke_assets: dict[str, Path]) -> None:
    texts = eval_texts(smoke_assets)
    exact = Classifier(trained_model, precision="fp32").predict(texts)
    quantized = Classifier(trained_model, precision="int8").predict(texts)
    agreement = sum(a.label == b.label for a, b in zip(exact, quantized, strict=True)) / len(texts)
    largest_change = max(
        abs(a.probabilities[label] - b.probabilities[label])
        for a, b in zip(exact, quantized, strict=True)
        for label in a.probabilities
    )
    assert agreement >= INT8_MIN_LABEL_AGREEMENT, agreement
    assert largest_change <= INT8_MAX_PROBABILITY_CHANGE, largest_change


def test_inputs_are_cut_at_the_trained_length_and_sorted_batches_keep_order(trained_model: Path) -> None:
    classifier = Classifier(trained_model, precision="fp32")
    trained = json.loads((trained_model / "run.json").read_text())["max_length"]
    assert classifier.max_length == trained
    texts = ["great " * 1000, "awful", "superb moving brilliant " * 3]
    assert len(classifier.encode(texts)[0]) == trained
    together = classifier.predict(texts)
    alone = [classifier.predict([text])[0] for text in texts]
    for batched, single in zip(together, alone, strict=True):
        assert batched.label == single.label
        assert batched.score == pytest.approx(single.score, abs=1e-5)
