"""Do a run's LoRA adapters fit the base model they will be merged into? Read from the files; no torch.

peft loads adapter tensors by name and skips, without a word, one whose module the base model
lacks: adapters with renamed tensors load as nothing and the untrained base answers. A tensor of
another rank or shape fails deep in loading with a traceback, and a scale (lora_alpha / r) far
out of range turns every answer into garbage. So before anything loads, each lora_A / lora_B
tensor must name a linear layer of the base model (its safetensors header, from the local folder
or the Hugging Face cache) with shapes that fit it, and the run's tokenizer must fit the base
model's embeddings.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from src.model_folder import fail, read_json, tokenizer_size
from src.weights import SAVED_MODEL, safetensors_header, weights_files

PREFIX = "base_model.model."  # what peft puts before a module's name in the adapter file
LORA_TENSOR = re.compile(r"^(?P<module>.+)\.lora_(?P<half>[AB])(?:\.[^.]+)?\.weight$")
MAX_SCALE = 1000.0  # lora_alpha / r; trained adapters are scaled by about 0.5 to 16


def _shapes(path: Path) -> dict[str, list[int]]:
    read = safetensors_header(path)
    if isinstance(read, str):
        raise fail(path, read)
    return {name: list(tensor["shape"]) for name, tensor in read[1].items() if isinstance(tensor, dict)}


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def check_scale(config_path: Path, config: dict[str, Any]) -> None:
    rank, alpha = _number(config.get("r")), _number(config.get("lora_alpha"))
    if rank is None or alpha is None or not (math.isfinite(alpha) and rank >= 1 and abs(alpha / rank) <= MAX_SCALE):
        raise fail(config_path, f"r {config.get('r')!r} and lora_alpha {config.get('lora_alpha')!r} give no usable "
                   f"scale (|lora_alpha / r| at most {MAX_SCALE:g})")  # fmt: skip


def check_fit(model_dir: Path, adapter_file: Path, config: dict[str, Any], base_dir: Path) -> None:
    """Each LoRA tensor names a linear layer of the base model and fits its shape; the tokenizer fits too."""
    base_config = read_json(base_dir / SAVED_MODEL.config)
    base: dict[str, list[int]] = {}
    for path in weights_files(base_dir, SAVED_MODEL):
        if path.suffix == ".safetensors":
            base.update(_shapes(path))
    vocabulary = base_config.get("vocab_size") if isinstance(base_config, dict) else None
    if isinstance(vocabulary, int) and (size := tokenizer_size(model_dir)) > vocabulary:
        raise fail(model_dir / "tokenizer.json", f"{size} tokens where the base model {base_dir} has {vocabulary}: "
                   "not the tokenizer the adapters were trained with")  # fmt: skip
    if not base:
        return  # weights only as a torch archive: shapes unknown here, peft checks them as it loads
    ranks: dict[str, dict[str, int]] = {}
    for name, shape in _shapes(adapter_file).items():
        match = LORA_TENSOR.match(name.removeprefix(PREFIX))
        if not match:
            continue
        module = match["module"]
        target = base.get(f"{module}.weight")
        if target is None and module.endswith("lm_head"):  # tied to the input embeddings
            target = base.get(module.replace("lm_head", "model.embed_tokens") + ".weight")
        if target is None or len(target) != 2 or len(shape) != 2:
            raise fail(adapter_file, f"tensor {name!r} names no linear layer of the base model {base_dir}")
        out_features, in_features = target
        fits = shape[1] == in_features if match["half"] == "A" else shape[0] == out_features
        if not fits:
            raise fail(adapter_file, f"tensor {name!r} has shape {shape}, which does not fit {module} {target}")
        ranks.setdefault(module, {})[match["half"]] = shape[0] if match["half"] == "A" else shape[1]
    if not ranks:
        raise fail(adapter_file, "holds no LoRA tensors (lora_A / lora_B): the base model would answer untrained")
    expected = None if config.get("rank_pattern") else config.get("r")
    for module, halves in ranks.items():
        if len(set(halves.values())) != 1 or len(halves) != 2 or expected not in (None, halves["A"]):
            raise fail(adapter_file, f"the adapters of {module} have ranks {halves} where adapter_config.json "
                       f"says r {config.get('r')!r}")  # fmt: skip
