"""LoRA fine-tuning of a causal language model on chats with TRL's SFTTrainer: the task's part of training.

src/models/train_model.py runs the recipe (prepare the run, train, publish) around these. The
tokenizer's chat template formats each conversation and the loss counts the assistant turns
only (`assistant_only_loss`); peft trains low-rank adapters on the layers in
`lora.target_modules` while the base model stays frozen. A run publishes the adapters and the
tokenizer; serving loads the base model and merges the adapters into it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence, Sized
from pathlib import Path
from typing import Any, cast

import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback
from trl.chat_template_utils import get_training_chat_template, has_generation_markers
from trl.trainer.sft_config import SFTConfig
from trl.trainer.sft_trainer import SFTTrainer

from src.config import Settings
from src.devices import training_precision
from src.hub import offline_message, reading
from src.models.train_model import TrainingError, training_arguments
from src.task.data import MESSAGES, load_splits
from src.task.scoring import perplexity, write_run_report

logger = logging.getLogger(__name__)
TASK = "text-generation"  # run.json: what kind of model the run folder holds


def build_trainer(settings: Settings, checkpoint_dir: Path, callbacks: Sequence[TrainerCallback]) -> SFTTrainer:
    """The chats, the base model with its LoRA config, and the SFTTrainer that fine-tunes one on the other (TRL
    formats and tokenizes the chats as it is built)."""
    tokenizer, model = _load_model(settings)
    with reading(settings.data):
        splits = load_splits(settings.data)
    assert set(splits["train"].column_names) == {MESSAGES}  # noqa: S101 - load_splits' contract
    trainer = SFTTrainer(
        model=model,
        args=sft_config(settings, checkpoint_dir),
        train_dataset=splits["train"],
        eval_dataset=splits["eval"],
        processing_class=tokenizer,
        peft_config=lora_config(settings),
        callbacks=list(callbacks),
    )
    for name, before, after in (("train", splits["train"], trainer.train_dataset),
                                ("eval", splits["eval"], trainer.eval_dataset)):  # fmt: skip
        _check_kept(name, len(before), len(cast(Sized, after)), settings.model.max_length, settings.training.packing)
    return trainer


def _check_kept(split: str, given: int, kept: int, max_length: int, packed: bool) -> None:
    """TRL leaves out a conversation whose assistant turns all lie past max_length: say so, and stop if none is left
    (packed, the rows are no longer conversations: only none left is known)."""
    advice = f"raise model.max_length ({max_length} tokens) or shorten the conversations' earlier turns"
    if kept == 0 and given:
        raise TrainingError(f"{split} split: in none of its {given} conversations does an assistant turn begin "
                            f"within model.max_length, so there is nothing to learn from: {advice}")  # fmt: skip
    if not packed and kept < given:
        logger.warning("%s split: %d of %d conversations are left out: their assistant turns lie past model.max_length "
                       "(%d tokens): %s", split, given - kept, given, max_length, advice)  # fmt: skip


def lora_config(settings: Settings) -> LoraConfig:
    lora = settings.lora
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM",
        target_modules=lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules),
    )  # fmt: skip


def metrics(trainer: Trainer, evaluation: Mapping[str, float]) -> dict[str, Any]:
    """The adapters' numbers: eval loss on the assistant turns, perplexity, tokens and parameters."""
    trainable, total = cast(Any, trainer.model).get_nb_trainable_parameters()  # a PeftModel
    tokens = [entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry]
    return {
        "eval_loss": evaluation["eval_loss"],
        "perplexity": perplexity(evaluation["eval_loss"]),
        "eval_token_accuracy": evaluation.get("eval_mean_token_accuracy"),
        "train_tokens": int(tokens[-1]) if tokens else None,
        "trainable_parameters": int(trainable),
        "total_parameters": int(total),
    }


def run_info(trainer: Trainer, settings: Settings) -> dict[str, Any]:
    return {"task": TASK}  # base_model (what serving loads and merges the adapters into) is the core's


def report(staging: Path, settings: Settings, metrics: Mapping[str, Any], published_as: Path) -> None:
    """report.md with the final evaluation training just made (no second pass over the split)."""
    measured = {key: metrics[key] for key in ("eval_loss", "perplexity", "eval_samples")}
    write_run_report(staging, measured, published_as)


def sft_config(settings: Settings, checkpoint_dir: Path) -> SFTConfig:
    training = settings.training
    return SFTConfig(
        **training_arguments(training, checkpoint_dir),
        train_sampling_strategy="group_by_length" if training.group_by_length and not training.packing else "random",
        # TRL's side: each chat through the tokenizer's chat template, truncated at max_length,
        # the loss on the assistant turns only (the template marks them with {% generation %}).
        max_length=settings.model.max_length,
        packing=training.packing,
        assistant_only_loss=True,
    )


def _load_model(settings: Settings) -> tuple[Any, Any]:
    checkpoint = settings.model.checkpoint
    dtype = torch.bfloat16 if training_precision(settings.training.mixed_precision) == "bf16" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype)
    except (OSError, ValueError) as error:
        if Path(checkpoint).expanduser().exists():
            raise TrainingError(
                f"model.checkpoint {checkpoint!r} is not a saved causal language model: {error}"
            ) from None
        raise TrainingError(offline_message([("model", checkpoint)])) from None
    if not tokenizer.chat_template:
        raise TrainingError(
            f"model.checkpoint {checkpoint!r}: its tokenizer has no chat template: choose an instruct or chat model"
        )
    if not has_generation_markers(tokenizer.chat_template):
        # The loss on the assistant turns needs a template that marks them ({% generation %}): TRL
        # ships such versions of the common families' templates (Qwen2.5, Qwen3, Llama 3, Gemma...).
        try:
            get_training_chat_template(tokenizer)
        except ValueError:
            raise TrainingError(
                f"model.checkpoint {checkpoint!r}: its chat template marks no assistant turns and TRL has no "
                "training version of it: choose a model TRL supports (e.g. Qwen/Qwen2.5-0.5B-Instruct), or add "
                "{% generation %}...{% endgeneration %} around the assistant turns in its chat template"
            ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model
