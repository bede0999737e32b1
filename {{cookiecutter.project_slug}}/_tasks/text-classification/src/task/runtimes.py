"""Which runtime and precision serve a classifier on which device: the one answer serve, predict and evaluate use.

Serving: bf16 (or fp16) on CUDA, fp16 on MPS (src/devices.py), and on CPU the measured defaults,
CPU_SERVING_PRECISION and CPU_SERVING_RUNTIME (benchmarks/serving_throughput.py measures fp32
against int8, PyTorch against ONNX Runtime, for speed and accuracy; the template's README
quotes the numbers). ONNX Runtime serves on CPU only, in fp32 or int8. No torch here: serve's
parent checks the choices before any worker starts.
"""

from __future__ import annotations

import typing

from src import devices
from src.config import ServingPrecision, ServingRuntime
from src.errors import UserError

SERVING_PRECISIONS: tuple[str, ...] = typing.get_args(ServingPrecision)
SERVING_RUNTIMES: tuple[str, ...] = typing.get_args(ServingRuntime)
CPU_SERVING_PRECISION = "int8"
CPU_SERVING_RUNTIME = "onnxruntime"
ONNX_PRECISIONS = ("fp32", "int8")


def check_serving_precision(requested: str, device_type: str) -> None:
    """An explicit serving.precision the device cannot run is a UserError (no torch needed)."""
    if requested not in SERVING_PRECISIONS:
        raise UserError(f"serving.precision: {requested!r} is not one of {', '.join(SERVING_PRECISIONS)}")
    if requested == "int8" and device_type in ("cuda", "mps"):
        raise UserError(
            f"serving.precision (--precision): int8 runs on CPU only, not on {device_type}: use auto, fp16 or bf16"
        )


def serving_precision(requested: str, device_type: str) -> str:
    """serving.precision resolved for the device: fp32, bf16, fp16 or int8."""
    check_serving_precision(requested, device_type)
    return devices.serving_precision(requested, device_type, on_cpu=CPU_SERVING_PRECISION)


def check_serving_runtime(runtime: str, precision: str, device_type: str) -> None:
    """An explicit serving.runtime the device or precision cannot run is a UserError (no torch needed)."""
    if runtime not in SERVING_RUNTIMES:
        raise UserError(f"serving.runtime: {runtime!r} is not one of {', '.join(SERVING_RUNTIMES)}")
    if runtime != "onnxruntime":
        return
    if device_type in ("cuda", "mps"):
        raise UserError(
            f"serving.runtime (--runtime): onnxruntime serves on CPU only, not on {device_type}: use auto or pytorch"
        )
    if precision not in ("auto", *ONNX_PRECISIONS):
        raise UserError(
            f"serving.runtime (--runtime): onnxruntime serves fp32 or int8, not {precision}: "
            "set serving.precision (--precision) to auto, int8 or fp32, or use --runtime pytorch"
        )


def serving_runtime(runtime: str, precision: str, device_type: str) -> str:
    """serving.runtime resolved for the device: pytorch or onnxruntime."""
    check_serving_runtime(runtime, precision, device_type)
    if runtime != "auto":
        return runtime
    if device_type == "cpu" and serving_precision(precision, device_type) == CPU_SERVING_PRECISION:
        return CPU_SERVING_RUNTIME
    return "pytorch"
