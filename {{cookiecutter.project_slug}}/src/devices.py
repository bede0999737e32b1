"""Which device, and which precision on it: the one answer training, serving, predict and evaluate use.

Training: bf16 where the GPU supports it, else fp16 on CUDA, full precision on CPU and MPS.
Serving: bf16 (or fp16) on CUDA, fp16 on MPS, and on CPU the measured defaults,
CPU_SERVING_PRECISION and CPU_SERVING_RUNTIME (benchmarks/serving_throughput.py measures fp32
against int8, PyTorch against ONNX Runtime, for speed and accuracy; the template's README
quotes the numbers). ONNX Runtime serves on CPU only, in fp32 or int8. torch is
imported only by the functions that ask the hardware, so the settings can name the choices
without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import typing
from collections.abc import Mapping
from typing import Literal

from src.errors import UserError

TrainingPrecision = Literal["auto", "bf16", "fp16", "no"]
ServingPrecision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
ServingRuntime = Literal["auto", "pytorch", "onnxruntime"]
SERVING_PRECISIONS: tuple[str, ...] = typing.get_args(ServingPrecision)
SERVING_RUNTIMES: tuple[str, ...] = typing.get_args(ServingRuntime)
CPU_SERVING_PRECISION = "int8"
CPU_SERVING_RUNTIME = "onnxruntime"
ONNX_PRECISIONS = ("fp32", "int8")


def cpu_cores() -> int:
    """The cores this process may run on (its affinity on Linux; macOS has no such call)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def visible_gpus(environ: Mapping[str, str]) -> int:
    """CUDA devices, counted without importing torch here (that costs seconds)."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        return len(
            [device for device in environ["CUDA_VISIBLE_DEVICES"].split(",") if device.strip() not in {"", "-1"}]
        )
    if shutil.which("nvidia-smi") is None:
        return 0
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False, timeout=30)
    return sum(line.startswith("GPU ") for line in result.stdout.splitlines()) if result.returncode == 0 else 0


def surely_cpu_only(environ: Mapping[str, str]) -> bool:
    """No GPU to serve on, decided without importing torch (seconds): no CUDA device, and not a Mac (MPS)."""
    return visible_gpus(environ) == 0 and sys.platform != "darwin"


def cuda_available() -> bool:
    import torch  # pants: no-infer-dep (callers depend on torch themselves)

    return torch.cuda.is_available()


def best_device() -> str:
    """cuda, else Apple's mps, else cpu."""
    import torch  # pants: no-infer-dep (callers depend on torch themselves)

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _half_for_cuda() -> str:
    import torch  # pants: no-infer-dep (callers depend on torch themselves)

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def training_precision(choice: str) -> str:
    """training.mixed_precision resolved for this machine: bf16, fp16 or no."""
    if choice != "auto":
        return choice
    return _half_for_cuda() if cuda_available() else "no"


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
    if requested != "auto":
        return requested
    if device_type == "cuda":
        return _half_for_cuda()
    return "fp16" if device_type == "mps" else CPU_SERVING_PRECISION


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
