"""A classifier's ONNX export for CPU serving: made once per run folder, atomically, under a lock.

The export is torch.onnx.export of the fp32 model, then, for int8, onnxruntime's dynamic
quantization of every linear layer but the classification head (which stays fp32: it is small,
and it is where a rounding error becomes a changed probability). It is written into the model
folder's onnx/ (or a cache folder when that one is read-only) under a lock, renamed into place
only when complete, so a killed export leaves nothing that is ever used; an export older than
the weights, or one that does not load, is made again. It carries the run's tokenizer and labels
in its metadata (model_inputs.py), so the worker that runs it needs neither torch nor transformers.
parity.py checks it against PyTorch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from src import runs
from src.task import model_inputs

ONNX_FOLDER = "onnx"
OPSET = 17
WEIGHT_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
UNFUSED = ["SkipLayerNormFusion"]  # onnxruntime graph optimizers left out (onnx_session)


def onnx_file(model_dir: Path, precision: str) -> Path:
    """Where a model folder's ONNX export lives: its onnx/, or a per-folder cache when that cannot be made.

    Nothing is created here: the exporter makes the folder, a reader only looks.
    """
    folder = model_dir / ONNX_FOLDER
    if not folder.is_dir() and (folder.exists() or not os.access(model_dir, os.W_OK)):
        # read-only (a mounted bucket, another user's folder) or a file in the way
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        folder = cache / "onnx-exports" / hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:16]
    return folder / f"model-{precision}.onnx"


def onnx_session(path: Path, threads: int) -> Any:
    """An onnxruntime InferenceSession on CPU with `threads` threads for each operator."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    # Its threads stop spin-waiting when a run returns: the server's HTTP process and its clients
    # need that core next (a lone request 0.2-0.4 ms sooner in an interleaved A/B on 2 cores).
    options.add_session_config_entry("session.force_spinning_stop", "1")
    # The residual Add and LayerNormalization stay two operators: fused into onnxruntime's
    # SkipLayerNormalization they took 15% of a run on this machine kind, apart 7% (a text
    # 4.8 -> 4.2 ms of CPU in groups, a lone text 5.8 -> 4.9 ms on one thread; same labels).
    return ort.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"], disabled_optimizers=UNFUSED
    )


def is_current(path: Path, model_dir: Path) -> bool:
    if not path.is_file():
        return False
    sources = [model_dir / name for name in WEIGHT_FILES]
    newest = max((source.stat().st_mtime_ns for source in sources if source.exists()), default=0)
    if path.stat().st_mtime_ns < newest:
        return False
    try:
        carried = carried_inputs(onnx_session(path, 1))
        if carried is not None:
            model_inputs.from_export(carried)
    except Exception:  # any load failure (the model, or the tokenizer it carries) means: export it again
        return False
    return True


@contextlib.contextmanager
def export_lock(folder: Path) -> Iterator[None]:
    """One export at a time per folder (two servers on one run wait for each other)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".export.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        for stale in folder.glob(f"{runs.TEMP_PREFIX}*"):  # what a killed export left
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
        yield


def quiet_exporters() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")  # torch.onnx's TorchScript-exporter notices
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime.quantization's "consider pre-processing" advice
    stack.callback(root.setLevel, level)
    return stack


def head_nodes(fp32: Path, base_prefix: str) -> list[str]:
    """The linear layers outside the base model (the classification head), by the names quantization sees."""
    import onnx

    graph = onnx.load(str(fp32), load_external_data=False).graph
    names = [node.name for node in graph.node if node.op_type in ("MatMul", "Gemm")]
    head = [name for name in names if not name.startswith(f"/{base_prefix}/")]
    return [*head, *(f"{name}_MatMul" for name in head)]  # onnxruntime turns a Gemm into <name>_MatMul


def carry_inputs(path: Path, model_dir: Path) -> None:
    """The export carries its tokenizer and labels (model_inputs.py) in its metadata: no transformers to run it."""
    import onnx

    described = model_inputs.describe(model_dir)
    if described is None:
        return  # no tokenizers pipeline: the worker loads the run's tokenizer through transformers
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = model_inputs.METADATA_KEY, described
    onnx.save(model, str(path))


def carried_inputs(session: Any) -> str | None:
    """What carry_inputs stored in a loaded export (None: an export made without it)."""
    metadata: dict[str, str] = session.get_modelmeta().custom_metadata_map
    return metadata.get(model_inputs.METADATA_KEY)


def export(model_dir: Path, precision: str, target: Path) -> None:
    """The fp32 model as ONNX (int8: dynamically quantized, the head kept fp32), published atomically at `target`."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    example = (torch.ones((1, 8), dtype=torch.long), torch.ones((1, 8), dtype=torch.long))
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}}
    with runs.atomic_path(target) as published, quiet_exporters():
        scratch = Path(tempfile.mkdtemp(prefix=runs.TEMP_PREFIX, dir=target.parent))
        try:
            fp32 = published if precision == "fp32" else scratch / "model-fp32.onnx"
            torch.onnx.export(
                model, example, str(fp32), input_names=["input_ids", "attention_mask"], output_names=["logits"],
                dynamic_axes=axes, opset_version=OPSET, dynamo=False,
            )  # fmt: skip
            if precision == "int8":
                from onnxruntime.quantization import QuantType, quantize_dynamic

                head = head_nodes(fp32, model.base_model_prefix)
                quantize_dynamic(str(fp32), str(published), weight_type=QuantType.QInt8, nodes_to_exclude=head)
            carry_inputs(published, model_dir)
            with published.open("rb") as handle:
                os.fsync(handle.fileno())
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
