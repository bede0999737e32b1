"""ONNX Runtime for CPU serving: export a run's model once, check it against PyTorch every start.

`uv run serve` on CPU (serving.runtime auto or onnxruntime) runs `prepare()` in a child process
before the server starts (the server's parent never imports torch). The export is
torch.onnx.export of the fp32 model, then, for int8, onnxruntime's dynamic quantization; it
is written into the model folder's onnx/ (or a cache folder when that one is read-only)
under a lock, renamed into place only when complete, so a killed export leaves nothing that
is ever used. Each start compares the ONNX model with the PyTorch fp32 model on the run's
eval texts (or review-like probe texts): the labels must agree on at least 99% and no
probability may move by more than 0.02, else the server refuses to start and says how to
serve with PyTorch instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from src import errors, runs
from src.deployment.classifier import Classifier, onnx_session
from src.errors import UserError

PARITY_TEXTS = 64
MIN_LABEL_AGREEMENT = 0.99
MAX_PROBABILITY_CHANGE = 0.02
OPSET = 17
# When the run's eval texts are not at hand: 8 x 8 short reviews, from glowing to scathing.
PROBE_OPENINGS = (
    "I watched this film last night.", "The cast is famous and the budget was huge.", "My friends recommended it.",
    "It runs for over two hours.", "The trailer promised a thriller.", "I had read the book first.",
    "A quiet drama about a family.", "The sequel nobody asked for.",
)  # fmt: skip
PROBE_VERDICTS = (
    "A wonderful, moving story with brilliant acting.", "Great fun from start to finish, I loved it.",
    "Good, though the ending felt rushed.", "Some fine scenes, some dull ones.", "Forgettable and a bit slow.",
    "The plot made no sense and the dialogue was weak.", "Boring, tedious and far too long.",
    "An awful mess: the worst film I have seen this year.",
)  # fmt: skip
USE_PYTORCH = "serve with PyTorch instead: --runtime pytorch (serving.runtime: pytorch)"


def _weights_changed_since(path: Path, model_dir: Path) -> bool:
    sources = [model_dir / name for name in ("config.json", "model.safetensors", "pytorch_model.bin")]
    newest = max((source.stat().st_mtime_ns for source in sources if source.exists()), default=0)
    return path.stat().st_mtime_ns < newest


@contextlib.contextmanager
def _export_lock(folder: Path) -> Iterator[None]:
    """One export at a time per folder (two servers on one run wait for each other)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".export.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        for stale in folder.glob(f"{runs.TEMP_PREFIX}*"):  # what a killed export left
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
        yield


def _quiet_exporters() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")  # torch.onnx's TorchScript-exporter notices
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime.quantization's "consider pre-processing" advice
    stack.callback(root.setLevel, level)
    return stack


def export(model_dir: Path, precision: str, target: Path) -> None:
    """The fp32 model as ONNX (int8: dynamically quantized), published atomically at `target`."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    example = (torch.ones((1, 8), dtype=torch.long), torch.ones((1, 8), dtype=torch.long))
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}}
    with runs.atomic_path(target) as published, _quiet_exporters():
        scratch = Path(tempfile.mkdtemp(prefix=runs.TEMP_PREFIX, dir=target.parent))
        try:
            fp32 = published if precision == "fp32" else scratch / "model-fp32.onnx"
            torch.onnx.export(
                model, example, str(fp32), input_names=["input_ids", "attention_mask"], output_names=["logits"],
                dynamic_axes=axes, opset_version=OPSET, dynamo=False,
            )  # fmt: skip
            if precision == "int8":
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(str(fp32), str(published), weight_type=QuantType.QInt8)
            with published.open("rb") as handle:
                os.fsync(handle.fileno())
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class Parity:
    texts: int
    source: str
    label_agreement: float
    max_probability_change: float

    @property
    def ok(self) -> bool:
        return self.label_agreement >= MIN_LABEL_AGREEMENT and self.max_probability_change <= MAX_PROBABILITY_CHANGE


def parity_texts(model_dir: Path) -> tuple[list[str], str]:
    """Up to PARITY_TEXTS of the run's eval texts when they are a local .jsonl, else review-like probe texts."""
    data = runs.section(runs.stored_settings(model_dir), "data")
    eval_file, column = data.get("eval_file"), str(data.get("text_column") or "text")
    found: list[str] = []
    if isinstance(eval_file, str) and eval_file.endswith(".jsonl") and Path(eval_file).is_file():
        with contextlib.suppress(OSError, ValueError), Path(eval_file).open(encoding="utf-8") as lines:
            for line in itertools.islice(lines, 10 * PARITY_TEXTS):
                row = json.loads(line) if line.strip() else None
                if isinstance(row, dict) and isinstance(row.get(column), str) and row[column].strip():
                    found.append(row[column])
                if len(found) == PARITY_TEXTS:
                    break
    if found:
        return found, f"{len(found)} texts of {eval_file}"
    probes = [f"{opening} {verdict}" for opening, verdict in itertools.product(PROBE_OPENINGS, PROBE_VERDICTS)]
    return probes[:PARITY_TEXTS], f"{min(len(probes), PARITY_TEXTS)} review-like probe texts"


def check_parity(model_dir: Path, path: Path, precision: str, threads: int) -> Parity:
    texts, source = parity_texts(model_dir)
    reference = Classifier(model_dir, "cpu", precision="fp32").predict(texts)
    served = Classifier(model_dir, "cpu", precision=precision, runtime="onnxruntime", threads=threads).predict(texts)
    pairs = list(zip(reference, served, strict=True))
    change = max(abs(a.probabilities[label] - b.probabilities[label]) for a, b in pairs for label in a.probabilities)
    agreement = sum(a.label == b.label for a, b in pairs) / len(pairs)
    return Parity(len(texts), source, agreement, change)


def prepare(model_dir: Path, precision: str, threads: int) -> Parity:
    """Export when needed (missing, unloadable or older than the weights), then check parity."""
    path = runs.onnx_file(model_dir, precision)
    with _export_lock(path.parent):
        usable = path.is_file() and not _weights_changed_since(path, model_dir)
        if usable:
            try:
                onnx_session(path, 1)
            except Exception:  # any load failure means: export it again
                usable = False
        if not usable:
            print(f"exporting {model_dir} to ONNX ({precision}): {path}", flush=True)
            export(model_dir, precision, path)
    parity = check_parity(model_dir, path, precision, threads)
    if not parity.ok:
        raise UserError(
            f"{path}: the ONNX Runtime model ({precision}) disagrees with PyTorch fp32 on {parity.source}: labels agree"
            f" on {parity.label_agreement:.1%} (need {MIN_LABEL_AGREEMENT:.0%}), largest probability change"
            f" {parity.max_probability_change:.3f} (at most {MAX_PROBABILITY_CHANGE}): {USE_PYTORCH}"
        )
    return parity


def describe(parity: Parity, precision: str) -> str:
    return (
        f"ONNX Runtime {precision} agrees with PyTorch fp32 on {parity.source}: labels {parity.label_agreement:.1%},"
        f" largest probability change {parity.max_probability_change:.4f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """python -m src.deployment.onnx_engine MODEL_DIR PRECISION RUNTIME ACCELERATOR THREADS (serve runs it)."""
    from transformers.utils import logging as transformers_logging

    from src.devices import best_device, serving_precision, serving_runtime

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # weights load twice
    model_dir, precision, runtime, accelerator, threads = sys.argv[1:] if argv is None else argv
    device = best_device() if accelerator == "auto" else accelerator  # as LitServe picks it
    if serving_runtime(runtime, precision, device) != "onnxruntime":
        return 0
    precision = serving_precision(precision, device)
    parity = prepare(Path(model_dir), precision, int(threads))
    print(describe(parity, precision), flush=True)
    return 0


if __name__ == "__main__":
    errors.run(main)
