"""Serving, side by side: `uv run serve` (each runtime and precision) against what users write by hand.

Run from a generated project, with its interpreter (it needs torch, transformers, litserve, onnxruntime):
    cd <project> && .venv/bin/python <template>/benchmarks/serving_throughput.py
One model (a real-size DistilBERT, random init from DistilBertConfig(), saved locally with
the smoke WordPiece tokenizer and a run.json saying it was trained at length 256), the same
review-like texts, the same client (asyncio, one kept-alive connection per concurrent client, closed
loop: `Client`) on the same machine:
  - `serve: ... (default)`: `python -m src serve` as shipped (on CPU: ONNX Runtime int8,
    exported into the model folder and checked against PyTorch before it serves);
  - `serve: pytorch int8` and `serve: pytorch fp32`: the same server with serving.runtime pytorch;
  - `serve: onnxruntime int8, batching off` (and with 2 workers of 1 thread each): the default with
    max_batch_size 1 (and workers_per_device 2);
  - `hand-written FastAPI + pipeline`: a FastAPI app calling `transformers.pipeline` per request;
  - `hand-written FastAPI + ONNX Runtime int8`: what a performance-minded user writes: the model
    exported with torch.onnx.export, quantized with onnxruntime.quantization.quantize_dynamic,
    one InferenceSession called per request from a FastAPI endpoint;
at concurrency 1, 16 and 64, in ROUNDS interleaved rounds (each round starts every server in turn, in
an order rotated by one server per round, so that slow minutes of a shared machine fall on
different servers; the tables hold each number's median over the rounds, and the JSON also keeps
every round's requests/s; each row also has the CPU time the client and the server spent a
request, which the requests/s follow, both sharing the cores); then lone requests to the default
and the hand-written ONNX Runtime app running at once, in alternating blocks (a difference of a
millisecond is below what separate rounds resolve here); plus the in-process ceiling
(Classifier.predict on batches of 32) and the accuracy change of int8 (PyTorch and ONNX Runtime)
on the smoke eval split (a smoke model trained here). Writes benchmarks/results/serving_throughput.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write

CONCURRENCY = (1, 16, 64)
ROUNDS = 3  # two single runs of the same app minutes apart read 66 and 107 req/s here
REQUESTS = {1: 200, 16: 256, 64: 512}
PAIRED_BLOCKS, PAIRED_BLOCK = 24, 20  # lone requests to the default and the hand-written ONNX app, interleaved
TRAINED_LENGTH = 256  # the template's model.max_length
DEFAULT = "serve: onnxruntime int8 (default)"
HANDWRITTEN = "hand-written FastAPI + pipeline"
HANDWRITTEN_ONNX = "hand-written FastAPI + ONNX Runtime int8"
TUNED = "serve: onnxruntime int8, batching off, 2 workers x 1 thread"
SERVERS = {
    DEFAULT: {},
    "serve: pytorch int8": {"SERVING__RUNTIME": "pytorch", "SERVING__PRECISION": "int8"},
    "serve: pytorch fp32": {"SERVING__RUNTIME": "pytorch", "SERVING__PRECISION": "fp32"},
    "serve: onnxruntime int8, batching off": {"SERVING__MAX_BATCH_SIZE": "1"},
    TUNED: {"SERVING__MAX_BATCH_SIZE": "1", "SERVING__WORKERS_PER_DEVICE": "2"},  # threads: cores / workers
    HANDWRITTEN: {},
    HANDWRITTEN_ONNX: {},
}
CEILINGS = {"pytorch fp32": ("pytorch", "fp32"), "pytorch int8": ("pytorch", "int8"),
            "onnxruntime int8": ("onnxruntime", "int8")}  # fmt: skip


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


def handwritten_onnx_app(model_dir: str, port: int) -> None:
    """What a performance-minded user writes: export, quantize, one InferenceSession per request."""
    import numpy as np
    import onnxruntime as ort
    import torch
    import uvicorn
    from fastapi import FastAPI
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    folder = Path(tempfile.mkdtemp())
    example = tokenizer("an example", return_tensors="pt")
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    torch.onnx.export(model, (example["input_ids"], example["attention_mask"]), str(folder / "model.onnx"),
                      input_names=["input_ids", "attention_mask"], output_names=["logits"], dynamic_axes=axes,
                      opset_version=17, dynamo=False)  # fmt: skip
    quantize_dynamic(str(folder / "model.onnx"), str(folder / "model-int8.onnx"), weight_type=QuantType.QInt8)
    session = ort.InferenceSession(str(folder / "model-int8.onnx"), providers=["CPUExecutionProvider"])
    labels = model.config.id2label
    app = FastAPI()

    @app.post("/predict")
    def predict(request: TextRequest) -> dict[str, Any]:
        encoded = tokenizer(request.text, truncation=True, max_length=TRAINED_LENGTH, return_tensors="np")
        inputs = {name: encoded[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
        logits = session.run(None, inputs)[0][0]
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = int(probabilities.argmax())
        return {"label": labels[best], "score": float(probabilities[best])}

    @app.get("/health")
    def health() -> str:
        return "ok"

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def texts(count: int) -> list[str]:
    from src.task import smoke

    return [row["text"] for row in smoke.reviews(count, seed=7)]


def save_model(target: Path) -> Path:
    import torch
    from src import smoke_assets
    from src.task import TASK
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    assets = smoke_assets.build(target / "assets", 42, TASK.smoke)  # for its tokenizer
    torch.manual_seed(0)
    config = DistilBertConfig(id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    model_dir = target / "model"
    DistilBertForSequenceClassification(config).save_pretrained(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_dir / name).write_bytes((assets["model"] / name).read_bytes())
    info = {"max_length": TRAINED_LENGTH, "labels": ["neg", "pos"]}
    (model_dir / "run.json").write_text(json.dumps(info), encoding="utf-8")
    return model_dir


def ceiling(model_dir: Path, sample: list[str], runtime: str, precision: str) -> float:
    from src.task import parity
    from src.task.classifier import Classifier

    threads = len(os.sched_getaffinity(0))
    if runtime == "onnxruntime":
        parity.prepare(model_dir, precision, threads)
    classifier = Classifier(model_dir, precision=precision, runtime=runtime, threads=threads)
    classifier.predict(sample[:32])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(sample), 32):
        classifier.predict(sample[start : start + 32])
    return len(sample) / (time.perf_counter() - started)


def int8_accuracy(scratch: Path) -> dict[str, dict[str, float]]:
    """fp32 against int8 (PyTorch, ONNX Runtime) on the smoke eval split, with a smoke model trained here."""
    from src import smoke_assets
    from src.config import PROJECT_ROOT, SMOKE_SETTINGS_FILE, load_settings
    from src.models.train_model import train
    from src.task import TASK, parity, smoke
    from src.task.classifier import Classifier

    assets = smoke_assets.build(scratch / "smoke", 42, TASK.smoke)
    overrides = {**smoke_assets.overrides(assets), "training": {"output_dir": str(scratch / "runs")}}
    settings = load_settings(
        PROJECT_ROOT / "configs" / "settings.yaml", environ={}, overlays=[SMOKE_SETTINGS_FILE], overrides=overrides
    )
    run_dir = scratch / "runs" / str(train(settings, TASK)["run_id"])
    parity.prepare(run_dir, "int8", threads=1)
    rows = [json.loads(line) for line in assets["eval"].read_text(encoding="utf-8").splitlines()]
    truth = [smoke.LABELS[row["label"]] for row in rows]
    text = [row["text"] for row in rows]
    exact = Classifier(run_dir, precision="fp32").predict(text)
    results = {}
    for name, runtime in (("pytorch int8", "pytorch"), ("onnxruntime int8", "onnxruntime")):
        got = Classifier(run_dir, precision="int8", runtime=runtime).predict(text)
        pairs = list(zip(exact, got, strict=True))
        results[name] = {
            "eval_samples": float(len(rows)),
            "accuracy_fp32": sum(a.label == t for a, t in zip(exact, truth, strict=True)) / len(rows),
            "accuracy_int8": sum(a.label == t for a, t in zip(got, truth, strict=True)) / len(rows),
            "label_agreement": sum(a.label == b.label for a, b in pairs) / len(pairs),
            "max_probability_change": max(abs(a.score - b.probabilities[a.label]) for a, b in pairs),
        }
        numbers = results[name]
        numbers["accuracy_change_points"] = 100 * (numbers["accuracy_int8"] - numbers["accuracy_fp32"])
    return results


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in a process group (the server and its children)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def load_with_cpu(url: str, sample: list[str], concurrency: int, server_pgid: int) -> dict[str, float]:
    """load(), plus the CPU milliseconds a request cost this client and the server."""
    client, server = os.times(), group_cpu_seconds(server_pgid)
    results = asyncio.run(load(url, sample, concurrency))
    spent = os.times()
    client_seconds = spent.user + spent.system - client.user - client.system
    return {
        **results,
        "client_cpu_ms_per_request": 1000 * client_seconds / len(sample),
        "server_cpu_ms_per_request": 1000 * (group_cpu_seconds(server_pgid) - server) / len(sample),
    }


class Client:
    """One persistent HTTP/1.1 connection that POSTs texts to /predict: a load generator that costs
    the shared cores about a tenth of a millisecond a request. httpx's AsyncClient with 64 kept-alive
    connections cost 3-8 ms of CPU a request here, switching between the two from run to run, which
    decided the requests/s of every server more than the server did."""

    def __init__(self, url: str) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, text: str) -> float:
        """Seconds from sending the request to the whole answer (status 200, else an error)."""
        if self.connection is None:
            self.connection = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.connection
        body = json.dumps({"text": text}).encode()
        head = f"POST /predict HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        started = time.perf_counter()
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status, *headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        lengths = [line.split(":", 1)[1] for line in headers if line.lower().startswith("content-length:")]
        answer = await reader.readexactly(int(lengths[0]))
        elapsed = time.perf_counter() - started
        if status.split()[1] != "200":
            raise RuntimeError(f"{status}: {answer[:200]!r}")
        return elapsed

    async def close(self) -> None:
        if self.connection is not None:
            self.connection[1].close()
            await self.connection[1].wait_closed()


async def load(url: str, sample: list[str], concurrency: int) -> dict[str, float]:
    """`concurrency` clients, each on its own connection, sending the next text as soon as answered."""
    latencies: list[float] = []
    queue = list(sample)

    async def worker() -> None:
        client = Client(url)
        try:
            while queue:
                latencies.append(await client.post(queue.pop()))
        finally:
            await client.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "requests_per_second": len(sample) / elapsed,
        "p50_ms": 1000 * quantiles[49], "p95_ms": 1000 * quantiles[94], "p99_ms": 1000 * quantiles[98],
    }  # fmt: skip


@contextlib.contextmanager
def running(name: str, model_dir: Path) -> Iterator[tuple[str, int]]:
    """One of SERVERS, healthy and warmed up: its URL and process group, stopped on exit."""
    port = free_port()
    if name in (HANDWRITTEN, HANDWRITTEN_ONNX):
        mode = "--handwritten" if name == HANDWRITTEN else "--handwritten-onnx"
        command = [sys.executable, __file__, mode, str(model_dir), str(port)]
    else:
        command = [sys.executable, "-m", "src", "serve", "--host", "127.0.0.1", "--port", str(port)]
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
        asyncio.run(load(url, texts(16), 4))  # warm-up
        yield url, process.pid
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def measure(name: str, model_dir: Path, sample: list[str]) -> dict[int, dict[str, float]]:
    with running(name, model_dir) as (url, pgid):
        results = {}
        for level in CONCURRENCY:
            results[level] = load_with_cpu(url, sample[: REQUESTS[level]], level, pgid)
            print(f"{name} at {level}: {results[level]['requests_per_second']:.1f} req/s", flush=True)
        return results


def paired_lone(model_dir: Path, sample: list[str], names: tuple[str, str]) -> dict[str, dict[str, float]]:
    """Lone requests to two servers running at once, in alternating blocks: both meet the same
    minutes of a shared machine, which separate rounds cannot promise for a difference of 1 ms."""
    latencies: dict[str, list[float]] = {name: [] for name in names}
    with running(names[0], model_dir) as (first, _), running(names[1], model_dir) as (second, _):
        urls = dict(zip(names, (first, second), strict=True))

        async def alternate() -> None:
            clients = {name: Client(url) for name, url in urls.items()}
            for block in range(PAIRED_BLOCKS):
                for name in names if block % 2 == 0 else names[::-1]:
                    for text in sample[block * PAIRED_BLOCK : (block + 1) * PAIRED_BLOCK]:
                        latencies[name].append(await clients[name].post(text))
            for client in clients.values():
                await client.close()

        asyncio.run(alternate())
    return {
        name: {"requests": len(values), "p50_ms": 1000 * statistics.median(values),
               "p90_ms": 1000 * statistics.quantiles(values, n=10)[8]}
        for name, values in latencies.items()
    }  # fmt: skip


def interleaved(model_dir: Path, sample: list[str]) -> list[dict[str, dict[int, dict[str, float]]]]:
    names = list(SERVERS)
    rounds = []
    for index in range(ROUNDS):
        shift = index % len(names)
        order = names[shift:] + names[:shift]
        print(f"round {index + 1} of {ROUNDS}: {', '.join(order)}", flush=True)
        rounds.append({name: measure(name, model_dir, sample) for name in order})
    return rounds


def medians(rounds: list[dict[str, dict[int, dict[str, float]]]]) -> dict[str, dict[int, dict[str, float]]]:
    metrics = list(rounds[0][DEFAULT][CONCURRENCY[0]])
    return {
        name: {
            level: {metric: statistics.median(r[name][level][metric] for r in rounds) for metric in metrics}
            for level in CONCURRENCY
        }
        for name in SERVERS
    }


def targets(
    ceilings: dict[str, float], served: dict[str, dict[int, dict[str, float]]], lone: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    ours, fp32, handwritten, onnx_app = served[DEFAULT], served["serve: pytorch fp32"], served[HANDWRITTEN], served[
        HANDWRITTEN_ONNX]  # fmt: skip
    rows = [
        ("default serve / hand-written ONNX Runtime app, requests/s at concurrency 64",
         ours[64]["requests_per_second"] / onnx_app[64]["requests_per_second"], ">=", 1.5),
        ("default serve p50 - hand-written ONNX Runtime p50, lone requests, the two interleaved (ms)",
         lone[DEFAULT]["p50_ms"] - lone[HANDWRITTEN_ONNX]["p50_ms"], "<=", 0.0),
        ("default serve p50 - hand-written ONNX Runtime p50 at concurrency 1, medians of the rounds (ms)",
         ours[1]["p50_ms"] - onnx_app[1]["p50_ms"], "<=", 0.0),
        ("default serve p99 / p50 at concurrency 64", ours[64]["p99_ms"] / ours[64]["p50_ms"], "<", 1.5),
        ("default serve / hand-written pipeline app, requests/s at concurrency 64",
         ours[64]["requests_per_second"] / handwritten[64]["requests_per_second"], ">=", 3.0),
        ("pytorch fp32 serve at concurrency 64 / in-process pytorch fp32 ceiling",
         fp32[64]["requests_per_second"] / ceilings["pytorch fp32"], ">=", 0.9),
    ]  # fmt: skip
    met = {">=": lambda v, limit: v >= limit, "<=": lambda v, limit: v <= limit, "<": lambda v, limit: v < limit}
    return [
        {"target": name, "value": value, "limit": f"{op} {limit:g}", "met": met[op](value, limit)}
        for name, value, op, limit in rows
    ]


def main() -> None:
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    started, load_before = time.monotonic(), os.getloadavg()
    sample = texts(max(REQUESTS.values()))
    with tempfile.TemporaryDirectory() as scratch:
        accuracy = int8_accuracy(Path(scratch))
        model_dir = save_model(Path(scratch))
        ceilings = {name: ceiling(model_dir, sample, *how) for name, how in CEILINGS.items()}
        rounds = interleaved(model_dir, sample)
        lone = paired_lone(model_dir, sample, (DEFAULT, HANDWRITTEN_ONNX))
    served = medians(rounds)
    rps = {name: rows[64]["requests_per_second"] for name, rows in served.items()}
    ratios = {
        "default serve / hand-written ONNX Runtime app at concurrency 64": rps[DEFAULT] / rps[HANDWRITTEN_ONNX],
        "default serve / hand-written pipeline app at concurrency 64": rps[DEFAULT] / rps[HANDWRITTEN],
        "batching off, 2 workers x 1 thread / hand-written ONNX Runtime app at concurrency 64": rps[TUNED]
        / rps[HANDWRITTEN_ONNX],
        "default serve / pytorch int8 serve at concurrency 64": rps[DEFAULT] / rps["serve: pytorch int8"],
        "default serve / the same with batching off at concurrency 64": rps[DEFAULT]
        / rps["serve: onnxruntime int8, batching off"],
        "default serve / in-process onnxruntime int8 ceiling at concurrency 64": rps[DEFAULT]
        / ceilings["onnxruntime int8"],
    }
    checks = targets(ceilings, served, lone)
    path = write(
        "serving_throughput",
        {
            "model": "DistilBERT (66M), random init; smoke WordPiece tokenizer; run.json max_length 256",
            "mean_words_per_text": statistics.mean(len(text.split()) for text in sample),
            "in_process_ceiling_samples_per_second": ceilings,
            "int8_accuracy_on_smoke_eval": accuracy,  # by runtime
            "rounds": ROUNDS,
            "served": {mode: {str(level): row for level, row in rows.items()} for mode, rows in served.items()},
            "lone_requests_interleaved": lone,
            "requests_per_second_by_round": {
                mode: {str(level): [r[mode][level]["requests_per_second"] for r in rounds] for level in CONCURRENCY}
                for mode in SERVERS
            },
            "ratios": ratios,
            "targets": checks,
            "wall_seconds": time.monotonic() - started,
            "load_average_before_and_after": [list(load_before), list(os.getloadavg())],  # 1/5/15 min: other work
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
    elif sys.argv[1:2] == ["--handwritten-onnx"]:
        handwritten_onnx_app(sys.argv[2], int(sys.argv[3]))
    else:
        main()
