"""Which device, and which precision on it: the one answer training, serving, predict and evaluate use.

Training: bf16 where the GPU supports it, else fp16 on CUDA, full precision on CPU and MPS.
Serving: bf16 (or fp16) on CUDA, fp16 on MPS, and on CPU what the task measured best (its
engine passes it). torch is imported only by the functions that ask the hardware, so the
settings can name the choices and the launchers can count devices without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from typing import Literal

TrainingPrecision = Literal["auto", "bf16", "fp16", "no"]


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


def serving_precision(requested: str, device_type: str, on_cpu: str = "fp32") -> str:
    """serving.precision resolved for the device: auto is bf16 (else fp16) on CUDA, fp16 on MPS, `on_cpu` on CPU."""
    if requested != "auto":
        return requested
    if device_type == "cuda":
        return _half_for_cuda()
    return "fp16" if device_type == "mps" else on_cpu
