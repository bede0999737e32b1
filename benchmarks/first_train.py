"""Time to a first served prediction: the README's quickstart, step by step; cold and warm uv cache.

Run from the template checkout: `uv run python benchmarks/first_train.py`.
The steps are the README's: generate a project (cookiecutter, whose hook runs `uv lock`),
`uv sync`, `uv run train-local --smoke`, then `uv run serve` until its first
answer to POST /predict (on CPU: the ONNX Runtime int8 export made and checked against PyTorch on
this first start), and a second `uv run serve` of the same run until /health answers (the check's
stamp read instead of checking again). Cold uses an empty uv cache (every wheel downloaded,
~3 GB for CUDA torch); warm reuses the machine's cache. A plain `uv sync` leaves Python to compile
what each command imports on its first run, so that cost is inside the train and serve steps; the
last row, with `uv sync --compile-bytecode` instead (warm cache, a project of its own), is the
other choice the README gives. Writes benchmarks/results/first_train.json with the machine's load
average at the start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from _common import clean_env, generate, table, timed, write

FIRST_ANSWER = "uv run serve -> first /predict answered"
SECOND_START = "second uv run serve -> /health answers"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_until(project: Path, path: str, body: bytes | None, **env: str) -> float:
    """Start `uv run serve` (its own process group), return the seconds until `path` answers 200, stop it."""
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        ["uv", "run", "serve", "--port", str(port)], cwd=project, env=clean_env(**env), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"uv run serve exited with {process.returncode} in {project}")
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body)
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
                    if answer.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def run(cache: Path | None, workdir: Path, compile_bytecode: bool = False) -> dict[str, float]:
    env = {"UV_CACHE_DIR": str(cache)} if cache else {}
    steps = {}
    started = time.perf_counter()
    project = generate(workdir, **env)
    steps["generate (incl. uv lock)"] = time.perf_counter() - started
    sync = ["uv", "sync", *(["--compile-bytecode"] if compile_bytecode else [])]
    steps["uv sync"] = timed(sync, project, **env)
    steps["uv run train-local --smoke"] = timed(["uv", "run", "train-local", "--smoke"], project, **env)
    steps[FIRST_ANSWER] = serve_until(project, "/predict", b'{"text": "a wonderful film"}', **env)
    steps["cookiecutter -> first served prediction"] = sum(steps.values())
    steps[SECOND_START] = serve_until(project, "/health", None, **env)
    return steps


def main() -> None:
    results = {}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        cold_cache = scratch_path / "uv-cache"
        results["cold uv cache"] = run(cold_cache, scratch_path / "cold")
        shutil.rmtree(cold_cache, ignore_errors=True)  # ~6 GB
        results["warm uv cache"] = run(None, scratch_path / "warm")
        results["warm uv cache, uv sync --compile-bytecode"] = run(None, scratch_path / "compiled", True)
    path = write("first_train", {"load_average_at_start": load, "seconds": results})
    steps = list(next(iter(results.values())))
    print(table([[step, *(results[kind][step] for kind in results)] for step in steps], ["step", *results]))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
