"""Serving throughput and latency of `uv run serve` against the model's in-process ceiling.

Run with a generated project's interpreter (it needs torch, transformers, litserve):
    <project>/.venv/bin/python benchmarks/serving_throughput.py
A real-size DistilBERT (random init from DistilBertConfig(), saved locally) with a small
WordPiece tokenizer classifies short review-like texts. The ceiling is Classifier.predict
in process on batches of 32; the server runs with batching off (max_batch_size 1) and on
(32), at concurrency 1, 16 and 64, on 127.0.0.1. Writes benchmarks/results/serving_throughput.json.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from src.deployment.classifier import Classifier
from src.models import smoke
from transformers import DistilBertConfig, DistilBertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write

CONCURRENCY = (1, 16, 64)
REQUESTS = {1: 48, 16: 192, 64: 256}
BATCH_SIZES = {"batching off": 1, "batching on": 32}


def texts(count: int) -> list[str]:
    return [row["text"] for row in smoke.reviews(count, seed=7)]


def save_model(target: Path) -> None:
    smoke.build(target / "assets")  # for its tokenizer
    tokenizer_dir = target / "assets" / "model"
    torch.manual_seed(0)
    config = DistilBertConfig(id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    DistilBertForSequenceClassification(config).save_pretrained(target / "model")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (target / "model" / name).write_bytes((tokenizer_dir / name).read_bytes())


def ceiling(model_dir: Path, sample: list[str]) -> float:
    classifier = Classifier(model_dir)
    classifier.predict(sample[:32])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(sample), 32):
        classifier.predict(sample[start : start + 32])
    return len(sample) / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def load(url: str, sample: list[str], concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    queue = list(sample)

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            text = queue.pop()
            started = time.perf_counter()
            response = await client.post("/predict", json={"text": text})
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "requests_per_second": len(sample) / elapsed,
        "p50_ms": 1000 * quantiles[49], "p95_ms": 1000 * quantiles[94], "p99_ms": 1000 * quantiles[98],
    }  # fmt: skip


def serve(model_dir: Path, max_batch_size: int, sample: list[str]) -> dict[int, dict[str, float]]:
    port = free_port()
    env = {**os.environ, "SERVING__MAX_BATCH_SIZE": str(max_batch_size), "SERVING__BATCH_TIMEOUT": "0.005"}
    command = [sys.executable, "-m", "src.deployment.serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--model-dir", str(model_dir)], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            sys.exit("server did not become healthy")
        asyncio.run(load(url, sample[:16], 4))  # warm-up
        return {level: asyncio.run(load(url, sample[: REQUESTS[level]], level)) for level in CONCURRENCY}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def main() -> None:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    sample = texts(max(REQUESTS.values()))
    with tempfile.TemporaryDirectory() as scratch:
        save_model(Path(scratch))
        model_dir = Path(scratch) / "model"
        in_process = ceiling(model_dir, sample)
        served = {mode: serve(model_dir, size, sample) for mode, size in BATCH_SIZES.items()}
    ratios = {
        "served/ceiling at concurrency 64 (batching on)": served["batching on"][64]["requests_per_second"] / in_process,
        "batching on/off at concurrency 64": served["batching on"][64]["requests_per_second"]
        / served["batching off"][64]["requests_per_second"],
    }
    path = write(
        "serving_throughput",
        {
            "model": "DistilBERT, default config, random init; smoke WordPiece tokenizer",
            "mean_words_per_text": statistics.mean(len(text.split()) for text in sample),
            "in_process_ceiling_samples_per_second": in_process,
            "served": {mode: {str(level): row for level, row in rows.items()} for mode, rows in served.items()},
            "ratios": ratios,
        },
    )
    rows = [
        [mode, level, r["requests_per_second"], r["p50_ms"], r["p95_ms"], r["p99_ms"]]
        for mode, by_level in served.items()
        for level, r in by_level.items()
    ]
    print(f"in-process ceiling: {in_process:.1f} samples/s")
    print(table(rows, ["mode", "concurrency", "req/s", "p50 ms", "p95 ms", "p99 ms"]))
    print(table([[name, value] for name, value in ratios.items()], ["ratio", "value"]))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
