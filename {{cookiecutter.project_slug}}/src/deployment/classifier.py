"""In-process batched inference on a saved model: what the server runs in its worker.

Inputs are truncated where the run was trained (run.json's max_length), so serving feeds
the model what it saw in training and never pays for more. Texts are tokenized once,
sorted by token count and run in micro-batches padded only to their own longest text.
The precision follows the device (src/devices.py: int8 on CPU, half precision on GPUs), and
so does the runtime: PyTorch, or on CPU an ONNX Runtime session of the same model
(onnx_engine.py exports and checks it).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
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
            self.session = onnx_session(onnx_file(Path(model_dir), self.precision), threads)
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

    def _probabilities(self, rows: list[list[int]]) -> list[list[float]]:
        input_ids, attention_mask = self._padded(rows)
        if self.runtime == "onnxruntime":
            logits = self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            return cast(list[list[float]], (shifted / shifted.sum(axis=-1, keepdims=True)).tolist())
        inputs = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
        logits = self.model(**{name: tensor.to(self.device) for name, tensor in inputs.items()}).logits
        return cast(list[list[float]], logits.float().softmax(dim=-1).cpu().tolist())

    @torch.inference_mode()
    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        encoded = self.encode(texts)
        order = sorted(range(len(texts)), key=lambda index: len(encoded[index]))
        results: list[Prediction | None] = [None] * len(texts)
        for start in range(0, len(order), MICRO_BATCH):
            chunk = order[start : start + MICRO_BATCH]
            probabilities = self._probabilities([encoded[index] for index in chunk])
            for index, row in zip(chunk, probabilities, strict=True):
                best = max(range(len(row)), key=row.__getitem__)
                results[index] = Prediction(
                    label=self.labels[best],
                    score=row[best],
                    probabilities=dict(zip(self.labels, row, strict=True)),
                )
        return [result for result in results if result is not None]
