"""Which precision and runtime each device serves with (no torch: CPU answers and refusals only)."""

from __future__ import annotations

import pytest

from src.errors import UserError
from src.task.runtimes import CPU_SERVING_PRECISION, CPU_SERVING_RUNTIME, check_serving_runtime, serving_runtime


@pytest.mark.parametrize(
    ("runtime", "precision", "device", "expected"),
    [
        ("auto", "auto", "cpu", CPU_SERVING_RUNTIME if CPU_SERVING_PRECISION == "int8" else "pytorch"),
        ("auto", "int8", "cpu", CPU_SERVING_RUNTIME),
        ("auto", "fp32", "cpu", "pytorch"),
        ("auto", "auto", "cuda", "pytorch"),
        ("auto", "auto", "mps", "pytorch"),
        ("pytorch", "int8", "cpu", "pytorch"),
        ("onnxruntime", "fp32", "cpu", "onnxruntime"),
        ("onnxruntime", "auto", "cpu", "onnxruntime"),
    ],
)
def test_runtime_per_device(runtime: str, precision: str, device: str, expected: str) -> None:
    assert serving_runtime(runtime, precision, device) == expected


@pytest.mark.parametrize(
    ("runtime", "precision", "device", "words"),
    [
        ("onnxruntime", "auto", "cuda", "CPU only, not on cuda"),
        ("onnxruntime", "auto", "mps", "CPU only, not on mps"),
        ("onnxruntime", "fp16", "cpu", "fp32 or int8, not fp16"),
        ("onnxruntime", "bf16", "auto", "fp32 or int8, not bf16"),
        ("tensorrt", "auto", "cpu", "serving.runtime"),
    ],
)
def test_impossible_runtime_is_refused(runtime: str, precision: str, device: str, words: str) -> None:
    with pytest.raises(UserError, match=words):
        check_serving_runtime(runtime, precision, device)
