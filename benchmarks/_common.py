"""Helpers shared by the benchmark scripts: generate a project, run and time commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parent.parent
RESULTS = TEMPLATE / "benchmarks" / "results"


def clean_env(**extra: str) -> dict[str, str]:
    dropped = {"VIRTUAL_ENV", "PYTHONPATH", "SETTINGS_FILE"}
    env = {key: value for key, value in os.environ.items() if key not in dropped and "__" not in key}
    identity = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid"}
    identity |= {"GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
    return {**env, **identity, **extra}


def timed(command: list[str], cwd: Path, **env: str) -> float:
    """Run a command to completion (failing loudly) and return its wall time in seconds."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed


def generate(output_dir: Path, **env: str) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    timed(["cookiecutter", str(TEMPLATE), "--no-input", "-o", str(output_dir)], output_dir, **env)
    return output_dir / "my-ml-project"


def write(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    results = {"machine": machine(), **results}
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return path


def machine() -> str:
    cpus = len(os.sched_getaffinity(0))
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gb = 0.0
    return f"{cpus} CPU cores, {memory_gb:.0f} GiB RAM, no GPU" if cpus else "unknown"


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header, *[[f"{cell:.2f}" if isinstance(cell, float) else str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)
