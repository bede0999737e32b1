"""How far int8 moves a classifier's answers, across many smoke runs: what the parity check's bounds rest on.

Run from a generated classification project, with its interpreter:
    cd <project> && .venv/bin/python <template>/benchmarks/int8_parity.py [SEEDS]
For each seed (default 20), the smoke assets and a smoke run are built exactly as
`uv run train-local --smoke` builds them with TRAINING__SEED=<seed> (in process, one thread),
the model is exported to ONNX fp32 as `uv run serve` exports it, and quantized to int8 with
onnxruntime's dynamic quantization in several ways: every linear layer (the earlier default),
the classification head kept in fp32 (the default now), and per-channel weights with and without
the head. Each is compared with PyTorch fp32 on the run's whole eval split (200 reviews): label
agreement on the texts PyTorch is decided about, the mean and the largest probability change,
and whether the run would pass the earlier check (labels 99% on 64 texts, every probability
within 0.02) and the current one (src/task/parity.py). Writes benchmarks/results/int8_parity.json.
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write

sys.path.insert(0, str(Path.cwd()))  # the generated project, whose interpreter runs this
from onnxruntime.quantization import QuantType, quantize_dynamic
from src import smoke_assets
from src.models.train_model import train
from src.task import TASK, onnx_export, parity
from src.task.classifier import Classifier
from tests.helpers.models import smoke_settings

OPTIONS: dict[str, dict[str, Any]] = {
    "int8, every linear layer": {},
    "int8, head in fp32 (default)": {"head": True},
    "int8 per-channel": {"per_channel": True},
    "int8 per-channel, head in fp32": {"per_channel": True, "head": True},
}
EARLIER = {"texts": 64, "min_label_agreement": 0.99, "max_probability_change": 0.02}


def probabilities(session_path: Path, encoded: list[list[int]]) -> np.ndarray[Any, Any]:
    session = onnx_export.onnx_session(session_path, 1)
    rows = []
    for ids in encoded:  # one text at a time, as a lone request is served
        inputs = np.array([ids])
        logits = session.run(None, {"input_ids": inputs, "attention_mask": np.ones_like(inputs)})[0][0]
        shifted = np.exp(logits - logits.max())
        rows.append(shifted / shifted.sum())
    return np.array(rows)


def passes_earlier(reference: np.ndarray[Any, Any], served: np.ndarray[Any, Any]) -> bool:
    head, tail = reference[: EARLIER["texts"]], served[: EARLIER["texts"]]
    agreement = float(np.mean(head.argmax(1) == tail.argmax(1)))
    change = float(np.abs(head - tail).max())
    return agreement >= EARLIER["min_label_agreement"] and change <= EARLIER["max_probability_change"]


def one_seed(seed: int, work: Path) -> dict[str, Any]:
    assets = smoke_assets.build(work / f"assets-{seed}", seed, TASK.smoke)
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = train(smoke_settings(assets, work / f"runs-{seed}", seed=seed), TASK)
    run = work / f"runs-{seed}" / metrics["run_id"]
    texts = [json.loads(line)["text"] for line in assets["eval"].read_text().splitlines()]
    exact = Classifier(run, "cpu", precision="fp32")
    labels = exact.labels
    reference = np.array([[p.probabilities[label] for label in labels] for p in exact.predict(texts)])
    encoded = exact.encode(texts)
    fp32 = work / f"fp32-{seed}.onnx"
    onnx_export.export(run, "fp32", fp32)
    head = onnx_export.head_nodes(fp32, "distilbert")
    row: dict[str, Any] = {"accuracy": metrics["accuracy"]}
    for name, option in OPTIONS.items():
        quantized = work / f"int8-{seed}-{len(row)}.onnx"
        excluded = head if option.get("head") else []
        with onnx_export.quiet_exporters():
            quantize_dynamic(str(fp32), str(quantized), weight_type=QuantType.QInt8,
                             per_channel=option.get("per_channel", False), nodes_to_exclude=excluded)  # fmt: skip
        served = probabilities(quantized, encoded)
        as_dicts = [dict(zip(labels, values, strict=True)) for values in served]
        verdict = parity.compare([dict(zip(labels, v, strict=True)) for v in reference], as_dicts, "eval split")
        row[name] = {
            "label_agreement": float(verdict.label_agreement),
            "mean_probability_change": float(verdict.mean_probability_change),
            "max_probability_change": float(verdict.max_probability_change),
            "passes_earlier_check": bool(passes_earlier(reference, served)),
            "passes_check": bool(verdict.ok),
        }
    return row


def main() -> None:
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in range(seeds):
            results[str(seed)] = one_seed(seed, Path(scratch))
            print(seed, json.dumps(results[str(seed)]), flush=True)
    summary = {
        name: {
            "passes earlier check": sum(row[name]["passes_earlier_check"] for row in results.values()),
            "passes check": sum(row[name]["passes_check"] for row in results.values()),
            "median mean change": statistics.median(row[name]["mean_probability_change"] for row in results.values()),
            "largest change": max(row[name]["max_probability_change"] for row in results.values()),
            "lowest label agreement": min(row[name]["label_agreement"] for row in results.values()),
        }
        for name in OPTIONS
    }
    criteria = {**parity.CRITERIA, "texts": parity.PARITY_TEXTS}
    path = write("int8_parity", {"seeds": seeds, "criteria": criteria, "earlier_criteria": EARLIER,
                                 "summary": summary, "runs": results})  # fmt: skip
    columns = list(next(iter(summary.values())))
    print(table([[name, *summary[name].values()] for name in summary], ["quantization", *columns]))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
