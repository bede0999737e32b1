"""The start-up check of a published chat run (LoRA adapters on a base model); no torch.

serve, serve-cloud, predict and evaluate check a folder with this before they use it:
adapter_config.json must describe LoRA adapters, their weights must be complete (src/weights.py,
the check training's resume uses too), the tokenizer must load and carry a chat template, and a
base model given as a local folder must still be there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.model_folder import check_weights, fail, read_json, run_info, tokenizer_limit, tokenizer_size
from src.weights import ModelFiles

# peft's save_pretrained: the adapters and their config, beside the tokenizer the run trained with.
ADAPTER = ModelFiles("adapter_config.json", ("adapter_model.safetensors",))
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers 5 saves a tokenizer's chat template
DEFAULT_LENGTH = 2048  # tokens, for a folder that says nothing of its length


@dataclass(frozen=True)
class RunFolder:
    path: Path
    base_model: str  # a Hub id or a local folder: the model the adapters were trained on
    max_length: int  # tokens: where the run truncated its conversations


def _adapter(model_dir: Path) -> dict[str, Any]:
    path = model_dir / ADAPTER.config
    if not path.is_file():
        raise fail(path, "missing: this folder holds no LoRA adapters")
    config: dict[str, Any] = read_json(path)
    kind = config.get("peft_type") if isinstance(config, dict) else None
    if kind != "LORA":
        raise fail(path, f"not a LoRA adapter config (peft_type {kind!r})")
    if not isinstance(config.get("base_model_name_or_path"), str) or not config["base_model_name_or_path"]:
        raise fail(path, "names no base model (base_model_name_or_path)")
    check_weights(model_dir, ADAPTER)
    return config


def _chat_template(model_dir: Path) -> None:
    tokenizer_size(model_dir)  # it loads
    path = model_dir / "tokenizer_config.json"
    config = read_json(path) if path.is_file() else {}
    if (
        not (isinstance(config, dict) and config.get("chat_template"))
        and not (model_dir / CHAT_TEMPLATE_FILE).is_file()
    ):
        raise fail(model_dir, f"the tokenizer has no chat template ({CHAT_TEMPLATE_FILE}): chats cannot be formatted")


def inspect(model_dir: Path) -> RunFolder:
    """What serving needs to know about a run folder, or BadModelFolderError saying what is wrong."""
    if not model_dir.is_dir():
        raise fail(model_dir, "not a folder")
    adapter = _adapter(model_dir)
    _chat_template(model_dir)
    info = run_info(model_dir)
    base = str(info["base_model"] if isinstance(info.get("base_model"), str) else adapter["base_model_name_or_path"])
    if base.startswith(("/", "./", "../", "~")) and not (Path(base).expanduser() / "config.json").is_file():
        raise fail(model_dir / "run.json", f"its base model {Path(base).expanduser()} is gone (no config.json there)")
    recorded = info.get("max_length")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
        max_length = recorded
    else:
        max_length = tokenizer_limit(model_dir) or DEFAULT_LENGTH
    return RunFolder(path=model_dir, base_model=base, max_length=max_length)


def describe(folder: RunFolder) -> str:
    return (
        f"base model {folder.base_model} with the run's LoRA adapters merged; prompts cut at {folder.max_length} tokens"
    )
