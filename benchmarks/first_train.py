"""Time to first train: generate a project, `uv sync`, smoke train; cold and warm uv cache.

Run from the template checkout: `uv run python benchmarks/first_train.py`.
Cold uses an empty uv cache (every wheel downloaded, ~3 GB for CUDA torch); warm reuses
the machine's cache. Writes benchmarks/results/first_train.json.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from _common import generate, table, timed, write


def run(cache: Path | None, workdir: Path) -> dict[str, float]:
    env = {"UV_CACHE_DIR": str(cache)} if cache else {}
    steps = {}
    started = time.perf_counter()
    project = generate(workdir, **env)
    steps["generate (incl. uv lock)"] = time.perf_counter() - started
    steps["uv sync"] = timed(["uv", "sync"], project, **env)
    steps["uv run train-local --smoke"] = timed(["uv", "run", "train-local", "--smoke"], project, **env)
    steps["total"] = sum(steps.values())
    return steps


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        cold_cache = scratch_path / "uv-cache"
        results["cold uv cache"] = run(cold_cache, scratch_path / "cold")
        shutil.rmtree(cold_cache, ignore_errors=True)  # ~6 GB
        results["warm uv cache"] = run(None, scratch_path / "warm")
    path = write("first_train", {"seconds": results})
    steps = list(next(iter(results.values())))
    print(table([[step, *(results[kind][step] for kind in results)] for step in steps], ["step", *results]))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
