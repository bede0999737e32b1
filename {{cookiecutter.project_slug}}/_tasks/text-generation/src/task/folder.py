"""The start-up check of a published chat run (LoRA adapters on a base model); no torch.

serve, serve-cloud, predict and evaluate check a folder with this before they use it:
adapter_config.json must describe LoRA adapters with a usable scale, their weights must be
complete and finite (src/weights.py, the check training's resume uses too), the tokenizer must
load and carry a chat template that renders a conversation, and the base model must be on this
machine (a local folder as it was when the adapters were trained on it, or in the Hugging Face
cache) or downloadable; the adapters and the tokenizer must fit it (adapters.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.sandbox

from src.fingerprints import changed
from src.hub import hub_cache, hub_endpoint, hub_reachable, model_snapshot
from src.model_folder import check_weights, fail, read_json, run_info, tokenizer_limit, tokenizer_size
from src.task.adapters import check_fit, check_scale
from src.weights import ModelFiles

# peft's save_pretrained: the adapters and their config, beside the tokenizer the run trained with.
ADAPTER = ModelFiles("adapter_config.json", ("adapter_model.safetensors",))
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers 5 saves a tokenizer's chat template
DEFAULT_LENGTH = 2048  # tokens, for a folder that says nothing of its length
PROBE_CHAT = [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hello."},
              {"role": "user", "content": "What is the opposite of hot?"}]  # fmt: skip


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
    check_scale(path, config)
    check_weights(model_dir, ADAPTER)
    return config


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (marks the assistant's tokens for training): just its body."""

    tags = {"generation"}  # noqa: RUF012  # jinja2 declares it a set

    def parse(self, parser: Any) -> Any:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _chat_template(model_dir: Path) -> None:
    """The tokenizer loads and its chat template renders a conversation (as transformers renders it, sandboxed)."""
    tokenizer_size(model_dir)  # it loads
    path = model_dir / "tokenizer_config.json"
    config = read_json(path) if path.is_file() else {}
    config = config if isinstance(config, dict) else {}
    template, where = config.get("chat_template"), path
    if (model_dir / CHAT_TEMPLATE_FILE).is_file():
        where = model_dir / CHAT_TEMPLATE_FILE
        template = where.read_text(encoding="utf-8", errors="replace")
    if not isinstance(template, str) or not template:
        raise fail(model_dir, f"the tokenizer has no chat template ({CHAT_TEMPLATE_FILE}): chats cannot be formatted")
    tokens = {key: value.get("content") if isinstance(value, dict) else value
              for key, value in config.items() if key.endswith("_token")}  # fmt: skip

    def refuse(message: str) -> None:
        raise jinja2.TemplateError(message)

    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols]
    )
    environment.globals["raise_exception"] = refuse
    try:
        rendered = environment.from_string(template).render(messages=PROBE_CHAT, add_generation_prompt=True, **tokens)
    except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as error:
        problem = f"the chat template does not render a conversation ({type(error).__name__}: {error})"
        raise fail(where, problem[:400]) from None
    if not rendered.strip():
        raise fail(where, "the chat template renders a conversation as nothing")


def _base_model(model_dir: Path, base: str, info: dict[str, Any]) -> Path | None:
    """Where the base model's files are here (None: on the Hub, reachable: the worker downloads it)."""
    local = base.startswith(("/", "./", "../", "~"))
    if local and not (Path(base).expanduser() / "config.json").is_file():
        raise fail(model_dir / "run.json", f"its base model {Path(base).expanduser()} is gone (no config.json there)")
    if problem := changed(info.get("inputs", {}), "model.checkpoint"):
        raise fail(model_dir / "run.json", f"its base model: {problem} since the adapters were trained on it")
    found = model_snapshot(base)
    if found is None and not hub_reachable():
        raise fail(model_dir / "run.json", f"its base model {base} is neither a local folder nor in the Hugging Face "
                   f"cache ({hub_cache()}), and the Hub ({hub_endpoint()}) cannot be reached: download it once "
                   "with a network, or give a local copy")  # fmt: skip
    return found


def inspect(model_dir: Path) -> RunFolder:
    """What serving needs to know about a run folder, or BadModelFolderError saying what is wrong."""
    if not model_dir.is_dir():
        raise fail(model_dir, "not a folder")
    adapter = _adapter(model_dir)
    _chat_template(model_dir)
    info = run_info(model_dir)
    base = str(info["base_model"] if isinstance(info.get("base_model"), str) else adapter["base_model_name_or_path"])
    base_dir = _base_model(model_dir, base, info)
    if base_dir is not None:
        check_fit(model_dir, model_dir / ADAPTER.weights[0], adapter, base_dir)
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
