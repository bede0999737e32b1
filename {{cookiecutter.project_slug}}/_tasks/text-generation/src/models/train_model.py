"""LoRA fine-tuning of a causal language model on chats with TRL's SFTTrainer, on 1 to N processes.

`train(settings)` is the whole job as a plain function, read as its recipe: prepare the run,
build the trainer, train, collect the metrics, publish. `main()` is the command line that
`uv run train-local` reaches through `accelerate launch` (train_local.py), once per process.
The tokenizer's chat template formats each conversation and the loss counts the assistant
turns only (`assistant_only_loss`); peft trains low-rank adapters on the layers in
`lora.target_modules` while the base model stays frozen. Each run gets its own folder
(src/runs.py holds the format): checkpoints go to `<output_dir>/.checkpoints/<run_id>/` while
it trains, the finished adapter and tokenizer are published atomically to
`<output_dir>/<run_id>/` and `<output_dir>/latest` moves to it. Exactly one process (the main
one) decides the run id, publishes and writes metrics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import yaml
from accelerate import PartialState
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from transformers.trainer_utils import TrainOutput
from trl.chat_template_utils import get_training_chat_template, has_generation_markers
from trl.trainer.sft_config import SFTConfig
from trl.trainer.sft_trainer import SFTTrainer

from src import errors, flags, runs
from src.config import Settings, TrainingSettings
from src.data import MESSAGES, load_splits
from src.devices import best_device, cuda_available, training_precision
from src.errors import UserError
from src.evaluation.evaluate import perplexity, write_run_report
from src.hub import offline_message
from src.models import distributed, train_local
from src.models.checkpoints import checkpoint_step, last_checkpoint
from src.models.supervisor import exit_with_the_launcher

logger = logging.getLogger(__name__)
TASK = "text-generation"  # run.json: what kind of model the run folder holds


class TrainingError(UserError):
    """Training cannot start; the message says what to change."""


@dataclass(frozen=True)
class Run:
    run_id: str
    checkpoint_dir: Path  # where the Trainer saves while the run is unfinished
    resume_from: Path | None  # the checkpoint it continues from


def train(
    settings: Settings,
    callbacks: Sequence[TrainerCallback] = (),
    resume: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Fine-tune, evaluate and publish a new run (or continue `resume`); return its metrics."""
    environ = os.environ if environ is None else environ
    state = distributed.start(settings.training.seed)
    with contextlib.ExitStack() as stack:
        run = prepare_run(state, settings, resume, environ, stack)
        trainer = build_trainer(state, settings, run, callbacks)
        result = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
        metrics = collect_metrics(trainer, result, run, settings.training, environ)
        if state.is_main_process:
            publish(trainer, settings, run.run_id, metrics)
            shutil.rmtree(run.checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
        state.wait_for_everyone()
    return metrics


def prepare_run(
    state: PartialState, settings: Settings, resume: str | None, environ: Mapping[str, str], stack: contextlib.ExitStack
) -> Run:
    """Agree on the run id, lock the run and record it (main process), and choose the checkpoint to resume."""
    training = settings.training
    run_id = distributed.agree(state, lambda: choose_run(settings, resume, environ))
    checkpoint_dir = runs.checkpoint_dir(training.output_dir, run_id)
    if state.is_main_process:
        stack.enter_context(runs.run_lock(training.output_dir, run_id))
        info = runs.read_info(checkpoint_dir) or {"run_id": run_id, "run_name": training.run_name,
                                                   "started_at": runs.timestamp(runs.now_utc())}  # fmt: skip
        runs.write_json(checkpoint_dir / runs.RUN_INFO, info)
    resume_from = distributed.agree(state, lambda: last_checkpoint(checkpoint_dir))
    if resume_from:
        logger.info("Resuming run %s from %s", run_id, resume_from.name)
    else:
        logger.info("Training run %s on %d process(es)", run_id, state.num_processes)
    return Run(run_id, checkpoint_dir, resume_from)


def build_trainer(
    state: PartialState, settings: Settings, run: Run, callbacks: Sequence[TrainerCallback]
) -> SFTTrainer:
    """The chats, the base model with its LoRA config, and the SFTTrainer that fine-tunes one on the other."""
    with state.main_process_first():  # the main process fills the datasets cache, the others reuse it
        splits = _load_data(settings)
        tokenizer, model = _load_model(settings)
        trainer = SFTTrainer(
            model=model,
            args=training_arguments(settings, run.checkpoint_dir),
            train_dataset=splits["train"],
            eval_dataset=splits["eval"],
            processing_class=tokenizer,
            peft_config=lora_config(settings),
            callbacks=list(callbacks),
        )
    return trainer


def lora_config(settings: Settings) -> LoraConfig:
    lora = settings.lora
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM",
        target_modules=lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules),
    )  # fmt: skip


def collect_metrics(
    trainer: SFTTrainer, result: TrainOutput, run: Run, training: TrainingSettings, environ: Mapping[str, str]
) -> dict[str, Any]:
    """Evaluate the final adapters on the whole eval split (every process) and gather the run's numbers."""
    evaluation = trainer.evaluate()
    world_size = trainer.args.world_size
    trainable, total = cast(Any, trainer.model).get_nb_trainable_parameters()  # a PeftModel
    tokens = [entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry]
    return {
        "run_id": run.run_id,
        "eval_loss": evaluation["eval_loss"],
        "perplexity": perplexity(evaluation["eval_loss"]),
        "eval_token_accuracy": evaluation.get("eval_mean_token_accuracy"),
        "train_loss": result.training_loss,
        "global_step": trainer.state.global_step,
        "resumed_from_step": checkpoint_step(run.resume_from) if run.resume_from else None,
        "world_size": world_size,
        "num_machines": int(environ.get("SKYPILOT_NUM_NODES", "1") or 1),
        "effective_batch_size": world_size
        * training.per_device_train_batch_size
        * training.gradient_accumulation_steps,
        "train_samples": len(cast(Sized, trainer.train_dataset)),
        "eval_samples": len(cast(Sized, trainer.eval_dataset)),
        "train_tokens": int(tokens[-1]) if tokens else None,
        "trainable_parameters": int(trainable),
        "total_parameters": int(total),
        "train_runtime_s": result.metrics.get("train_runtime"),
    }


def publish(trainer: SFTTrainer, settings: Settings, run_id: str, metrics: dict[str, Any]) -> Path:
    """Save the adapters, the tokenizer, the records and the report into a staging folder, then publish (main)."""
    output_dir = settings.training.output_dir
    runs.remove_stale_staging(output_dir, run_id)
    staging = runs.new_staging_dir(output_dir, run_id)
    try:
        trainer.save_model(str(staging))  # adapter_model.safetensors, adapter_config.json, the tokenizer
        info = runs.read_info(runs.checkpoint_dir(output_dir, run_id))
        info.update(
            finished_at=runs.timestamp(runs.now_utc()),
            world_size=metrics["world_size"],
            max_length=settings.model.max_length,
            task=TASK,
            base_model=settings.model.checkpoint,  # serving loads it and merges the adapters into it
        )
        runs.write_json(staging / runs.RUN_INFO, info)
        runs.write_json(staging / runs.METRICS, metrics)
        used = yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
        runs.write_text(staging / runs.RUN_SETTINGS, used)
        trainer.state.save_to_json(str(staging / runs.TRAINER_STATE))  # the log history the report's curves draw
        try:  # report.md and pictures, in place before the run appears
            write_run_report(staging, {"eval_loss": metrics["eval_loss"], "perplexity": metrics["perplexity"],
                                       "eval_samples": metrics["eval_samples"]}, output_dir / run_id)  # fmt: skip
        except Exception:  # costs the report, not the trained model
            logger.exception("Could not write the evaluation report: `uv run evaluate %s` writes it", run_id)
        final = runs.publish(staging, output_dir, run_id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(
        "Saved %s (perplexity %.3f); %s now points at it", final, metrics["perplexity"], output_dir / runs.LATEST
    )
    return final


def training_arguments(settings: Settings, checkpoint_dir: Path) -> SFTConfig:
    training = settings.training
    dtype = training_precision(training.mixed_precision)
    return SFTConfig(
        output_dir=str(checkpoint_dir),
        run_name=training.run_name,
        num_train_epochs=training.num_train_epochs,
        max_steps=training.max_steps,
        per_device_train_batch_size=training.per_device_train_batch_size,
        per_device_eval_batch_size=training.per_device_eval_batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=training.learning_rate,
        weight_decay=training.weight_decay,
        warmup_steps=training.warmup_fraction,  # a float below 1 is a fraction of the steps
        train_sampling_strategy="group_by_length" if training.group_by_length and not training.packing else "random",
        seed=training.seed,
        logging_steps=training.logging_steps,
        save_strategy="steps",
        save_steps=training.save_steps,
        save_total_limit=training.save_total_limit,
        eval_strategy="steps" if training.eval_steps else "no",  # and once at the end, in train()
        eval_steps=training.eval_steps,
        dataloader_num_workers=training.dataloader_num_workers,
        dataloader_pin_memory=cuda_available(),
        report_to="none",
        use_cpu=best_device() == "cpu",  # on CPU the processes of a multi-process run join one gloo group
        accelerator_config={"use_configured_state": True},  # the state distributed.start() set up
        bf16=dtype == "bf16",
        fp16=dtype == "fp16",
        gradient_checkpointing=training.gradient_checkpointing,
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


def _load_data(settings: Settings) -> Any:
    try:
        splits = load_splits(settings.data)
    except (ConnectionError, OSError) as error:
        if settings.data.dataset is None:
            raise TrainingError(f"cannot read the data files: {error}") from None
        raise TrainingError(offline_message([("dataset", settings.data.dataset)])) from None
    assert set(splits["train"].column_names) == {MESSAGES}  # noqa: S101 - load_splits' contract
    return splits


def choose_run(settings: Settings, resume: str | None, environ: Mapping[str, str]) -> str:
    """The run id: the one to resume, SkyPilot's stable one, or a new unique one (main process)."""
    output_dir, run_name = settings.training.output_dir, settings.training.run_name
    if resume:
        return runs.resume_target(output_dir, resume)
    wanted = runs.run_id_for(run_name, runs.now_utc(), environ)
    if environ.get("SKYPILOT_TASK_ID"):  # a recovered managed job comes back to its own run
        runs.checkpoint_dir(output_dir, wanted).mkdir(parents=True, exist_ok=True)
        return wanted
    return runs.reserve_run_id(output_dir, wanted)


def main(argv: Sequence[str] | None = None) -> int:
    args = flags.TRAIN_LOCAL.parse(sys.argv[1:] if argv is None else argv)
    exit_with_the_launcher(os.environ)
    # Libraries log at WARNING and above; this project's own progress at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("src", "__main__"):  # this module is __main__ under `python -m`
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        metrics = train(train_local.run_settings(args), resume=os.environ.get(train_local.RESUME_ENV) or None)
    finally:
        distributed.stop()
    if PartialState().is_main_process:
        print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    errors.run(main)
