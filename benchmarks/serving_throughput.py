"""Serving, side by side: `uv run serve` (fp32 and int8) against what users write by hand.

Run from a generated project, with its interpreter (it needs torch, transformers, litserve):
    cd <project> && .venv/bin/python <template>/benchmarks/serving_throughput.py
One model (a real-size DistilBERT, random init from DistilBertConfig(), saved locally with
the smoke WordPiece tokenizer and a run.json saying it was trained at length 256), the same
review-like texts, the same client (httpx, asyncio, closed loop) on the same machine:
  - `serve (fp32)` and `serve (int8)`: `python -m src.deployment.serve` as shipped, with
    serving.precision set (what `uv run serve` runs);
  - `LitServe, batching off (fp32)`: the same server with max_batch_size 1;
  - `hand-written FastAPI + pipeline`: this script's `--handwritten` mode, a FastAPI app
    calling `transformers.pipeline` per request in a sync endpoint (uvicorn, one process);
at concurrency 1, 16 and 64, plus the in-process ceiling (Classifier.predict on batches
of 32, fp32 and int8) and the accuracy change of int8 on the smoke eval split (a smoke
model trained here). Writes benchmarks/results/serving_throughput.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write

CONCURRENCY = (1, 16, 64)
REQUESTS = {1: 48, 16: 192, 64: 256}
TRAINED_LENGTH = 256  # the template's model.max_length
SERVERS = {
    "serve (fp32)": {"SERVING__PRECISION": "fp32"},
    "serve (int8)": {"SERVING__PRECISION": "int8"},
    "LitServe, batching off (fp32)": {"SERVING__PRECISION": "fp32", "SERVING__MAX_BATCH_SIZE": "1"},
    "hand-written FastAPI + pipeline": {},
}
HANDWRITTEN = "hand-written FastAPI + pipeline"


class TextRequest(BaseModel):
    text: str


def handwritten_app(model_dir: str, port: int) -> None:
    """What users write by hand: a FastAPI endpoint that calls a transformers pipeline."""
    import uvicorn
    from fastapi import FastAPI
    from transformers import pipeline

    classify = pipeline("text-classification", model=model_dir, device=-1)
    app = FastAPI()

    @app.post("/predict")
    def predict(request: TextRequest) -> dict[str, Any]:
        result = classify(request.text, truncation=True, max_length=TRAINED_LENGTH)[0]
        return {"label": result["label"], "score": result["score"]}

    @app.get("/health")
    def health() -> str:
        return "ok"

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def texts(count: int) -> list[str]:
    from src.models import smoke

    return [row["text"] for row in smoke.reviews(count, seed=7)]


def save_model(target: Path) -> Path:
    import torch
    from src.models import smoke
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    assets = smoke.build(target / "assets")  # for its tokenizer
    torch.manual_seed(0)
    config = DistilBertConfig(id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    model_dir = target / "model"
    DistilBertForSequenceClassification(config).save_pretrained(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_dir / name).write_bytes((assets["model"] / name).read_bytes())
    info = {"max_length": TRAINED_LENGTH, "labels": ["neg", "pos"]}
    (model_dir / "run.json").write_text(json.dumps(info), encoding="utf-8")
    return model_dir


def ceiling(model_dir: Path, sample: list[str], precision: str) -> float:
    from src.deployment.classifier import Classifier

    classifier = Classifier(model_dir, precision=precision)
    classifier.predict(sample[:32])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(sample), 32):
        classifier.predict(sample[start : start + 32])
    return len(sample) / (time.perf_counter() - started)


def int8_accuracy(scratch: Path) -> dict[str, float]:
    """fp32 against int8 on the smoke eval split, with a smoke model trained here."""
    from src.config import PROJECT_ROOT, SMOKE_SETTINGS_FILE, load_settings
    from src.deployment.classifier import Classifier
    from src.models import smoke
    from src.models.train_model import train

    assets = smoke.build(scratch / "smoke")
    overrides = {**smoke.overrides(assets), "training": {"output_dir": str(scratch / "runs")}}
    settings = load_settings(
        PROJECT_ROOT / "configs" / "settings.yaml", environ={}, overlays=[SMOKE_SETTINGS_FILE], overrides=overrides
    )
    run_dir = scratch / "runs" / str(train(settings)["run_id"])
    rows = [json.loads(line) for line in assets["eval"].read_text(encoding="utf-8").splitlines()]
    truth = [smoke.LABELS[row["label"]] for row in rows]
    answers = {
        precision: Classifier(run_dir, precision=precision).predict([row["text"] for row in rows])
        for precision in ("fp32", "int8")
    }
    accuracy = {p: sum(a.label == t for a, t in zip(got, truth, strict=True)) / len(rows) for p, got in answers.items()}
    pairs = list(zip(answers["fp32"], answers["int8"], strict=True))
    return {
        "eval_samples": float(len(rows)),
        "accuracy_fp32": accuracy["fp32"],
        "accuracy_int8": accuracy["int8"],
        "accuracy_change_points": 100 * (accuracy["int8"] - accuracy["fp32"]),
        "label_agreement": sum(a.label == b.label for a, b in pairs) / len(pairs),
        "max_probability_change": max(abs(a.score - b.probabilities[a.label]) for a, b in pairs),
    }


def free_port() -> int:
    import socket

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
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "requests_per_second": len(sample) / elapsed,
        "p50_ms": 1000 * quantiles[49], "p95_ms": 1000 * quantiles[94], "p99_ms": 1000 * quantiles[98],
    }  # fmt: skip


def measure(name: str, model_dir: Path, sample: list[str]) -> dict[int, dict[str, float]]:
    port = free_port()
    if name == HANDWRITTEN:
        command = [sys.executable, __file__, "--handwritten", str(model_dir), str(port)]
    else:
        command = [sys.executable, "-m", "src.deployment.serve", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--model-dir", str(model_dir)]
    env = {key: value for key, value in os.environ.items() if "__" not in key and key != "LIT_SERVER_API_KEY"}
    process = subprocess.Popen(
        command, env={**env, **SERVERS[name]}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            sys.exit(f"{name}: server did not become healthy")
        asyncio.run(load(url, sample[:16], 4))  # warm-up
        results = {}
        for level in CONCURRENCY:
            results[level] = asyncio.run(load(url, sample[: REQUESTS[level]], level))
            print(f"{name} at {level}: {results[level]['requests_per_second']:.1f} req/s", flush=True)
        return results
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def targets(ceilings: dict[str, float], served: dict[str, dict[int, dict[str, float]]]) -> list[dict[str, Any]]:
    ours, int8, handwritten = served["serve (fp32)"], served["serve (int8)"], served[HANDWRITTEN]
    rows = [
        ("fp32 serve at concurrency 64 / in-process fp32 ceiling", ours[64]["requests_per_second"]
         / ceilings["fp32"], ">=", 0.9),
        ("int8 serve / hand-written app, requests/s at concurrency 64", int8[64]["requests_per_second"]
         / handwritten[64]["requests_per_second"], ">=", 3.0),
        ("fp32 serve p50 - hand-written p50 at concurrency 1 (ms)", ours[1]["p50_ms"] - handwritten[1]["p50_ms"],
         "<=", 5.0),
        ("int8 serve p50 - hand-written p50 at concurrency 1 (ms)", int8[1]["p50_ms"] - handwritten[1]["p50_ms"],
         "<=", 5.0),
        ("fp32 serve p99 / p50 at concurrency 64", ours[64]["p99_ms"] / ours[64]["p50_ms"], "<", 2.0),
        ("int8 serve p99 / p50 at concurrency 64", int8[64]["p99_ms"] / int8[64]["p50_ms"], "<", 2.0),
    ]  # fmt: skip
    met = {">=": lambda v, limit: v >= limit, "<=": lambda v, limit: v <= limit, "<": lambda v, limit: v < limit}
    return [
        {"target": name, "value": value, "limit": f"{op} {limit:g}", "met": met[op](value, limit)}
        for name, value, op, limit in rows
    ]


def main() -> None:
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    started, load_before = time.monotonic(), os.getloadavg()[0]
    sample = texts(max(REQUESTS.values()))
    with tempfile.TemporaryDirectory() as scratch:
        accuracy = int8_accuracy(Path(scratch))
        model_dir = save_model(Path(scratch))
        ceilings = {precision: ceiling(model_dir, sample, precision) for precision in ("fp32", "int8")}
        served = {name: measure(name, model_dir, sample) for name in SERVERS}
    rps = {name: rows[64]["requests_per_second"] for name, rows in served.items()}
    ratios = {
        "serve fp32 / in-process fp32 ceiling at concurrency 64": rps["serve (fp32)"] / ceilings["fp32"],
        "serve int8 / in-process int8 ceiling at concurrency 64": rps["serve (int8)"] / ceilings["int8"],
        "serve fp32 / hand-written at concurrency 64": rps["serve (fp32)"] / rps[HANDWRITTEN],
        "serve int8 / hand-written at concurrency 64": rps["serve (int8)"] / rps[HANDWRITTEN],
        "serve fp32 / batching off at concurrency 64": rps["serve (fp32)"] / rps["LitServe, batching off (fp32)"],
        "int8 / fp32 in-process ceiling": ceilings["int8"] / ceilings["fp32"],
    }
    checks = targets(ceilings, served)
    path = write(
        "serving_throughput",
        {
            "model": "DistilBERT (66M), random init; smoke WordPiece tokenizer; run.json max_length 256",
            "mean_words_per_text": statistics.mean(len(text.split()) for text in sample),
            "in_process_ceiling_samples_per_second": ceilings,
            "int8_accuracy_on_smoke_eval": accuracy,
            "served": {mode: {str(level): row for level, row in rows.items()} for mode, rows in served.items()},
            "ratios": ratios,
            "targets": checks,
            "wall_seconds": time.monotonic() - started,
            "load_average_1min_before_and_after": [load_before, os.getloadavg()[0]],  # other work on the machine
        },
    )
    rows = [
        [mode, level, r["requests_per_second"], r["p50_ms"], r["p95_ms"], r["p99_ms"]]
        for mode, by_level in served.items()
        for level, r in by_level.items()
    ]
    print(f"in-process ceilings (samples/s): {ceilings}")
    print(f"int8 on the smoke eval split: {accuracy}")
    print(table(rows, ["server", "concurrency", "req/s", "p50 ms", "p95 ms", "p99 ms"]))
    print(table([[name, value] for name, value in ratios.items()], ["ratio", "value"]))
    print(table([[c["target"], c["value"], c["limit"], c["met"]] for c in checks], ["target", "value", "goal", "met"]))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--handwritten"]:
        handwritten_app(sys.argv[2], int(sys.argv[3]))
    else:
        main()
