"""`uv run train-local`: run train_model.py under `accelerate launch`.

The flags are explicit so accelerate prints no "defaults were used" warning and does
not pin the process to one CPU thread. One process covers CPU, Apple MPS and a single
GPU; precision is chosen by the Trainer from settings (training.mixed_precision).
Extra arguments go to train_model.py (`uv run train-local --smoke`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from src.config import SettingsError, load_settings
from src.models.hub import hub_downloads, hub_reachable, offline_message


def cpu_threads() -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, available or 1)


def command(args: Sequence[str]) -> list[str]:
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--num_processes", "1",
        "--num_machines", "1",
        "--mixed_precision", "no",
        "--dynamo_backend", "no",
        "--num_cpu_threads_per_process", str(cpu_threads()),
        "-m", "src.models.train_model", *args,
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    if "--smoke" in args:
        env["HF_HUB_OFFLINE"] = "1"  # the smoke run needs nothing from the network
    else:
        try:
            missing = hub_downloads(load_settings())
        except SettingsError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if missing and not hub_reachable():
            print(f"error: {offline_message(missing)}", file=sys.stderr)
            return 2
        if not missing:
            env["HF_HUB_OFFLINE"] = "1"  # everything is local or cached: no minute of retries
    os.execve(sys.executable, command(args), env)
    return 0  # not reached: execve replaces this process


if __name__ == "__main__":
    sys.exit(main())
