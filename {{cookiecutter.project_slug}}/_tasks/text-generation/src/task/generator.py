"""A run's model as the server's worker, predict and the notebook load it, and the engine that runs it.

The base model is loaded with the run's LoRA adapters merged into its weights (no adapter
overhead per token), in the precision the device suits (src/devices.py: bf16 or fp16 on
GPUs; fp32 on CPU), then probed: scores on a short conversation must be finite. `open_engine`
puts it in a continuous-batching engine (engine.py) with the serving settings' limits.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from src.config import ServingSettings
from src.devices import serving_precision
from src.model_folder import fail
from src.task.engine import Engine
from src.task.folder import PROBE_CHAT, RunFolder

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(requested: str, device_type: str) -> str:
    """serving.precision for this device: auto is fp32 on CPU, else as devices.py says."""
    return serving_precision(requested, device_type, on_cpu="fp32")


def load_model(folder: RunFolder, device: str, precision: str, merge: bool = True) -> tuple[Any, Any]:
    """The tokenizer and the base model with the adapters (merged into it for serving, or as a PeftModel),
    probed: a model whose scores are not finite is refused (BadModelFolderError)."""
    tokenizer = AutoTokenizer.from_pretrained(folder.path)
    base = AutoModelForCausalLM.from_pretrained(folder.base_model, dtype=DTYPES[precision])
    model: Any = PeftModel.from_pretrained(base, folder.path)
    if merge:
        model = model.merge_and_unload()
    model = model.to(device).eval()
    _probe(tokenizer, model, folder)
    return tokenizer, model


def _probe(tokenizer: Any, model: Any, folder: RunFolder) -> None:
    """Scores on a short conversation must be finite: NaN or infinite ones mean every answer is garbage."""
    ids = tokenizer.apply_chat_template(PROBE_CHAT, add_generation_prompt=True, tokenize=True,
                                        return_dict=True)["input_ids"]  # fmt: skip
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=model.device)).logits
    if not bool(torch.isfinite(logits).all()):
        raise fail(folder.path, "the base model with these adapters gives NaN or infinite scores on a probe "
                   "conversation: every answer would be garbage")  # fmt: skip


def open_engine(folder: RunFolder, serving: ServingSettings, device: str = "cpu") -> Engine:
    """The run's model (merged, probed) in an engine with serving.max_sequences, cache_tokens, max_queued, timeout."""
    precision = resolve_precision(serving.precision, torch.device(device).type)
    tokenizer, model = load_model(folder, device, precision)
    gpu = torch.device(device).type != "cpu"
    return Engine(tokenizer, model, serving.sequences(gpu), serving.cache(gpu), serving.max_queued, serving.timeout)
