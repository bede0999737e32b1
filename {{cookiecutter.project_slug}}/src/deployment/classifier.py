"""In-process batched inference on a saved model: what the server runs in its worker.

Inputs are truncated where the run was trained (run.json's max_length), so serving feeds
the model what it saw in training and never pays for more. The precision follows the device
(src/devices.py: int8 on CPU, half precision on GPUs), and so does the runtime: PyTorch, or
on CPU an ONNX Runtime session of the same model (onnx_engine.py exports and checks it).
Texts are tokenized once. PyTorch runs them sorted by token count, in micro-batches padded
only to their own longest text. ONNX Runtime on CPU runs them one at a time, never padded:
a lone text on a session with all of the worker's threads, the texts of a batch side by side
on those threads, one each (measured with the serving benchmark on 2 cores: a padded batch
cost the worker 39 ms of CPU a text, one text per thread 24 ms).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from src.deployment.schemas import Prediction
from src.devices import serving_precision
from src.model_folder import trained_max_length
from src.runs import onnx_file, read_info

MICRO_BATCH = 16
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """int8 weights for every Linear layer, activations quantized on the fly (CPU)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch deprecates torch.ao.quantization in favour of torchao, which is not a
        # dependency here; the dynamic int8 kernels are still the fastest CPU path it ships.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    return cast(torch.nn.Module, quantized)


def onnx_session(path: Path, threads: int) -> Any:
    """An onnxruntime InferenceSession on CPU with `threads` threads for each operator."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class Classifier:
    """A saved model and tokenizer; `predict` takes any number of texts.

    runtime "pytorch" runs the model with torch on `device`; "onnxruntime" runs onnx_engine's
    export for this precision (fp32 or int8) on CPU with `threads` threads.
    """

    def __init__(
        self, model_dir: Path, device: str | torch.device = "cpu", precision: str = "auto",
        runtime: str = "pytorch", threads: int = 1,
    ) -> None:  # fmt: skip
        self.device = torch.device(device)
        self.precision = serving_precision(precision, self.device.type)
        self.runtime = runtime
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        config = AutoConfig.from_pretrained(model_dir)
        if runtime == "onnxruntime":
            path = onnx_file(Path(model_dir), self.precision)
            self.session = onnx_session(path, threads)  # a lone text: every thread on it
            self.text_session = onnx_session(path, 1) if threads > 1 else self.session
            self.pool = ThreadPoolExecutor(threads, thread_name_prefix="onnx") if threads > 1 else None
        else:
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=DTYPES[self.precision])
            model = model.to(self.device).eval()
            self.model = quantize_int8(model) if self.precision == "int8" else model
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        self.max_length = trained_max_length(
            read_info(Path(model_dir)), self.tokenizer.model_max_length, config.max_position_embeddings
        )
        self.pad_id = self.tokenizer.pad_token_id or 0

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, cut at the trained max_length."""
        ids: list[list[int]] = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        return ids

    def _padded(self, rows: list[list[int]]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        width = max(len(row) for row in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for index, row in enumerate(rows):
            input_ids[index, : len(row)] = row
            attention_mask[index, : len(row)] = 1
        return input_ids, attention_mask

    def _onnx_text(self, session: Any, row: list[int]) -> list[float]:
        input_ids = np.asarray([row], dtype=np.int64)
        logits = session.run(None, {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)})[0]
        shifted = np.exp(logits[0] - logits[0].max())
        return cast(list[float], (shifted / shifted.sum()).tolist())

    def _onnx_probabilities(self, encoded: list[list[int]]) -> list[list[float]]:
        if len(encoded) == 1 or self.pool is None:
            return [self._onnx_text(self.session, row) for row in encoded]
        return list(self.pool.map(lambda row: self._onnx_text(self.text_session, row), encoded))

    def _torch_probabilities(self, encoded: list[list[int]]) -> list[list[float]]:
        order = sorted(range(len(encoded)), key=lambda index: len(encoded[index]))
        results: list[list[float]] = [[] for _ in encoded]
        for start in range(0, len(order), MICRO_BATCH):
            chunk = order[start : start + MICRO_BATCH]
            input_ids, attention_mask = self._padded([encoded[index] for index in chunk])
            inputs = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
            logits = self.model(**{name: tensor.to(self.device) for name, tensor in inputs.items()}).logits
            for index, row in zip(chunk, logits.float().softmax(dim=-1).cpu().tolist(), strict=True):
                results[index] = row
        return results

    @torch.inference_mode()
    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        encoded = self.encode(texts)
        if self.runtime == "onnxruntime":
            rows = self._onnx_probabilities(encoded)
        else:
            rows = self._torch_probabilities(encoded)
        predictions = []
        for row in rows:
            best = max(range(len(row)), key=row.__getitem__)
            probabilities = dict(zip(self.labels, row, strict=True))
            predictions.append(Prediction(label=self.labels[best], score=row[best], probabilities=probabilities))
        return predictions
