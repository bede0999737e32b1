"""In-process batched inference on a saved model: what the server runs in its worker.

Inputs are truncated where the run was trained (run.json's max_length), so serving feeds
the model what it saw in training and never pays for more. The precision follows the device
(src/devices.py: int8 on CPU, half precision on GPUs), and so does the runtime: PyTorch, or
on CPU an ONNX Runtime session of the same model (onnx_export.py exports it, parity.py checks it),
which tokenizes with the export's own copy of the tokenizer and imports no torch (model_inputs.py).
Texts are tokenized once and run from shortest to longest in groups (`groups`), each padded
only to its own longest text: PyTorch in groups of MICRO_BATCH; ONNX Runtime on CPU in groups
of at most ONNX_GROUP_TOKENS padded tokens, side by side on the worker's threads, one session
thread each, or, fewer groups than threads (a lone text), each in turn on all of them.
Measured on 2 cores with the serving benchmark's model, 32 short reviews at a time: 5.8 ms of
CPU a text in such groups, 6.6 ms each text alone, 7.5 ms in groups of 16 (whose activations
no longer fit the cache). Outputs do not depend on the number of threads (checked bitwise).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from src.model_folder import fail, trained_max_length
from src.runs import read_info
from src.task import model_inputs
from src.task.onnx_export import carried_inputs, onnx_file, onnx_session
from src.task.runtimes import serving_precision
from src.task.schemas import Prediction

if TYPE_CHECKING:
    import torch

MICRO_BATCH = 16
PROBE_TEXT = "A probe: the scores of a model that can answer are finite."
ONNX_GROUP_TOKENS = 256
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "int8": "float32"}  # torch's names


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """int8 weights for every Linear layer, activations quantized on the fly (CPU)."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch deprecates torch.ao.quantization in favour of torchao, which is not a
        # dependency here; the dynamic int8 kernels are still the fastest CPU path it ships.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    return cast(torch.nn.Module, quantized)


def length_groups(
    lengths: Sequence[int], most_texts: int | None = None, most_tokens: int | None = None
) -> list[list[int]]:
    """Indices of `lengths` (token counts) from shortest to longest, cut into groups of at most
    `most_texts` texts and, padded to their longest, `most_tokens` tokens (None: no limit)."""
    groups: list[list[int]] = [[]]
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        group = groups[-1]
        full = most_texts is not None and len(group) == most_texts
        too_wide = most_tokens is not None and (len(group) + 1) * lengths[index] > most_tokens
        if group and (full or too_wide):
            groups.append(group := [])
        group.append(index)
    return groups


class Classifier:
    """A saved model and tokenizer; `predict` takes any number of texts.

    runtime "pytorch" runs the model with torch on `device`; "onnxruntime" runs onnx_export's
    export for this precision (fp32 or int8) on CPU with `threads` threads.
    """

    def __init__(
        self, model_dir: Path, device: str | torch.device = "cpu", precision: str = "auto",
        runtime: str = "pytorch", threads: int = 1,
    ) -> None:  # fmt: skip
        self.device = str(device)
        self.precision = serving_precision(precision, self.device.split(":")[0])
        self.runtime = runtime
        if runtime == "onnxruntime":
            path = onnx_file(Path(model_dir), self.precision)
            self.session = onnx_session(path, threads)
            self.text_session = onnx_session(path, 1) if threads > 1 else self.session
            self.lanes = max(1, threads)
            self.pool = ThreadPoolExecutor(threads, thread_name_prefix="onnx") if threads > 1 else None
            carried = carried_inputs(self.session)
            self.inputs = model_inputs.from_export(carried) if carried else model_inputs.from_run(Path(model_dir))
        else:
            import torch
            from transformers import AutoModelForSequenceClassification

            dtype = getattr(torch, DTYPES[self.precision])
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=dtype)
            model = model.to(device).eval()
            self.model = quantize_int8(model) if self.precision == "int8" else model
            self.device = str(torch.device(device))
            self.inputs = model_inputs.from_run(Path(model_dir))
        self.labels = self.inputs.labels
        self.max_length = trained_max_length(
            read_info(Path(model_dir)), self.inputs.model_max_length, self.inputs.positions
        )
        self.pad_id = self.inputs.pad_id
        (_, (probe,)), *_ = self._run(self.encode([PROBE_TEXT]), [[0]])
        if not all(math.isfinite(value) for value in probe):
            raise fail(Path(model_dir), f"{self.runtime} {self.precision} gives NaN or infinite scores on a probe "
                       "text: every answer would be garbage")  # fmt: skip

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, cut at the trained max_length."""
        return self.inputs.encode(texts, self.max_length)

    def _padded(self, rows: list[list[int]]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        width = max(len(row) for row in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for index, row in enumerate(rows):
            input_ids[index, : len(row)] = row
            attention_mask[index, : len(row)] = 1
        return input_ids, attention_mask

    def groups(self, lengths: Sequence[int]) -> list[list[int]]:
        """The texts `predict` runs together, as indices into `lengths` (their token counts)."""
        if self.runtime == "onnxruntime":
            return length_groups(lengths, most_tokens=ONNX_GROUP_TOKENS)
        return length_groups(lengths, most_texts=MICRO_BATCH)

    def _onnx_group(self, session: Any, rows: list[list[int]]) -> list[list[float]]:
        input_ids, attention_mask = self._padded(rows)
        logits = session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return cast(list[list[float]], (shifted / shifted.sum(axis=1, keepdims=True)).tolist())

    def _torch_group(self, rows: list[list[int]]) -> list[list[float]]:
        import torch

        input_ids, attention_mask = self._padded(rows)
        tensors = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
        with torch.inference_mode():
            logits = self.model(**{name: tensor.to(self.device) for name, tensor in tensors.items()}).logits
        return cast(list[list[float]], logits.float().softmax(dim=-1).cpu().tolist())

    def _run(self, encoded: list[list[int]], groups: list[list[int]]) -> Iterator[tuple[list[int], list[list[float]]]]:
        """Each group with its probabilities: ONNX Runtime groups side by side, one session thread each."""
        if self.runtime != "onnxruntime":
            return ((group, self._torch_group([encoded[i] for i in group])) for group in groups)
        if len(groups) < self.lanes:  # too few to share out: each in turn on all the threads
            return ((group, self._onnx_group(self.session, [encoded[i] for i in group])) for group in groups)

        def lane(mine: list[list[int]]) -> list[tuple[list[int], list[list[float]]]]:
            return [(group, self._onnx_group(self.text_session, [encoded[i] for i in group])) for group in mine]

        lanes = [groups[index :: self.lanes] for index in range(self.lanes)]
        return itertools.chain.from_iterable(self.pool.map(lane, lanes) if self.pool else map(lane, lanes))

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        encoded = self.encode(texts)
        rows: list[list[float]] = [[] for _ in encoded]
        for group, group_rows in self._run(encoded, self.groups([len(row) for row in encoded])):
            for index, row in zip(group, group_rows, strict=True):
                rows[index] = row
        predictions = []
        for row in rows:
            best = max(range(len(row)), key=row.__getitem__)
            probabilities = dict(zip(self.labels, row, strict=True))
            predictions.append(Prediction(label=self.labels[best], score=row[best], probabilities=probabilities))
        return predictions
