"""Fine-tune a sequence classifier with the Hugging Face Trainer, on 1 to N processes.

`train(settings)` is the whole job as a plain function, read as its recipe: prepare the run,
build the trainer, train, collect the metrics, publish. `main()` is the command line that
`uv run train-local` reaches through `accelerate launch` (train_local.py), once per process.
Each run gets its own folder (src/runs.py holds the format): checkpoints go to
`<output_dir>/.checkpoints/<run_id>/` while it trains, the finished model is published
atomically to `<output_dir>/<run_id>/` and `<output_dir>/latest` moves to it. Exactly one
process (the main one) decides the run id, publishes and writes metrics; evaluation runs on
every process and the Trainer gathers the whole split before the metrics are computed.
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

import numpy as np
import yaml
from accelerate import PartialState
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import TrainOutput

from src import errors, flags, runs
from src.config import Settings, TrainingSettings
from src.data import label_names, load_splits, tokenize
from src.devices import best_device, cuda_available, training_precision
from src.errors import UserError
from src.evaluation.evaluate import write_run_report
from src.evaluation.metrics import accuracy, cross_entropy, macro_f1
from src.hub import offline_message
from src.models import distributed, train_local
from src.models.checkpoints import checkpoint_step, last_checkpoint
from src.models.supervisor import exit_with_the_launcher

logger = logging.getLogger(__name__)


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
        trainer, labels = build_trainer(state, settings, run, callbacks)
        result = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
        metrics = collect_metrics(trainer, result, run, settings.training, environ)
        if state.is_main_process:
            publish(trainer, settings, run.run_id, metrics, labels)
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
) -> tuple[Trainer, list[str]]:
    """The data, the model and the Trainer that fine-tunes one on the other; and the label names."""
    with state.main_process_first():  # the main process fills the datasets cache, the others reuse it
        splits = _load_data(settings)
        labels = label_names(splits["train"], settings.data)
        tokenizer, model = _load_model(settings, labels)
        encoded = tokenize(splits, tokenizer, settings.data, settings.model.max_length)
    trainer = Trainer(
        model=model,
        args=training_arguments(settings.training, run.checkpoint_dir),
        train_dataset=encoded["train"],
        eval_dataset=encoded["eval"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=list(callbacks),
    )
    return trainer, labels


def collect_metrics(
    trainer: Trainer, result: TrainOutput, run: Run, training: TrainingSettings, environ: Mapping[str, str]
) -> dict[str, Any]:
    """Evaluate the final model on the whole eval split (every process) and gather the run's numbers."""
    evaluation = trainer.evaluate()
    world_size = trainer.args.world_size
    return {
        "run_id": run.run_id,
        "accuracy": evaluation["eval_accuracy"],
        "f1": evaluation["eval_f1"],
        # The Trainer's eval_loss weighs a short last batch as a full one: the mean over the examples instead.
        "eval_loss": evaluation["eval_cross_entropy"],
        "train_loss": result.training_loss,
        "global_step": trainer.state.global_step,
        "resumed_from_step": checkpoint_step(run.resume_from) if run.resume_from else None,
        "world_size": world_size,
        "num_machines": int(environ.get("SKYPILOT_NUM_NODES", "1") or 1),
        "effective_batch_size": training.per_device_train_batch_size * world_size,
        "train_samples": len(cast(Sized, trainer.train_dataset)),
        "eval_samples": int(evaluation["eval_count"]),
        "train_runtime_s": result.metrics.get("train_runtime"),
    }


def publish(trainer: Trainer, settings: Settings, run_id: str, metrics: dict[str, Any], labels: list[str]) -> Path:
    """Save the model, its records and its report into a staging folder, then publish it as the run (main process)."""
    output_dir = settings.training.output_dir
    runs.remove_stale_staging(output_dir, run_id)
    staging = runs.new_staging_dir(output_dir, run_id)
    try:
        trainer.save_model(str(staging))
        info = runs.read_info(runs.checkpoint_dir(output_dir, run_id))
        info.update(
            finished_at=runs.timestamp(runs.now_utc()),
            world_size=metrics["world_size"],
            max_length=settings.model.max_length,  # serving truncates where training did
            labels=labels,
            base_model=settings.model.checkpoint,
        )
        runs.write_json(staging / runs.RUN_INFO, info)
        runs.write_json(staging / runs.METRICS, metrics)
        used = yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
        runs.write_text(staging / runs.RUN_SETTINGS, used)
        trainer.state.save_to_json(str(staging / runs.TRAINER_STATE))  # the log history the report's curves draw
        try:  # report.md and pictures, in place before the run appears: one more pass over the eval split
            write_run_report(staging, settings.data, settings.training.best_model_metric, output_dir / run_id)
        except Exception:  # costs the report, not the trained model
            logger.exception("Could not write the evaluation report: `uv run evaluate %s` writes it", run_id)
        final = runs.publish(staging, output_dir, run_id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Saved %s (accuracy %.3f); %s now points at it", final, metrics["accuracy"], output_dir / runs.LATEST)
    return final


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy and macro F1 (src/evaluation/metrics.py, numpy: `evaluate.load` would need the Hub)."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    predicted = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(prediction.label_ids)
    return {
        "accuracy": accuracy(labels, predicted),
        "f1": macro_f1(labels, predicted),
        "cross_entropy": cross_entropy(logits, labels),
        "count": float(len(labels)),  # every process's share, gathered: the whole split
    }


def training_arguments(training: TrainingSettings, checkpoint_dir: Path) -> TrainingArguments:
    dtype = training_precision(training.mixed_precision)
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        run_name=training.run_name,
        num_train_epochs=training.num_train_epochs,
        max_steps=training.max_steps,
        per_device_train_batch_size=training.per_device_train_batch_size,
        per_device_eval_batch_size=training.per_device_eval_batch_size,
        learning_rate=training.learning_rate,
        weight_decay=training.weight_decay,
        warmup_steps=training.warmup_fraction,  # a float below 1 is a fraction of the steps
        train_sampling_strategy="group_by_length" if training.group_by_length else "random",
        seed=training.seed,
        logging_steps=training.logging_steps,
        save_strategy="steps",
        save_steps=training.save_steps,
        save_total_limit=training.save_total_limit,
        eval_strategy="steps" if training.eval_steps else "no",  # and once at the end, in train()
        eval_steps=training.eval_steps,
        load_best_model_at_end=training.keep_best_model,
        metric_for_best_model=training.best_model_metric if training.keep_best_model else None,
        dataloader_num_workers=training.dataloader_num_workers,
        dataloader_pin_memory=cuda_available(),
        report_to="none",
        use_cpu=best_device() == "cpu",  # on CPU the processes of a multi-process run join one gloo group
        accelerator_config={"use_configured_state": True},  # the state distributed.start() set up
        # A classifier's loss is a mean over its examples; "tokens across devices" would multiply
        # it by the process count, in evaluation (eval_loss) and in the gradients alike.
        average_tokens_across_devices=False,
        bf16=dtype == "bf16",
        fp16=dtype == "fp16",
    )


def _load_model(settings: Settings, labels: list[str]) -> tuple[Any, Any]:
    checkpoint = settings.model.checkpoint
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = AutoModelForSequenceClassification.from_pretrained(
            checkpoint,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: index for index, label in enumerate(labels)},
            ignore_mismatched_sizes=True,  # a checkpoint fine-tuned on other labels gets a new head
        )
    except OSError as error:
        if Path(checkpoint).expanduser().exists():
            raise TrainingError(f"model.checkpoint {checkpoint!r} is not a saved model: {error}") from None
        raise TrainingError(offline_message([("model", checkpoint)])) from None
    return tokenizer, model


def _load_data(settings: Settings) -> Any:
    try:
        return load_splits(settings.data)
    except (ConnectionError, OSError) as error:
        if settings.data.dataset is None:
            raise TrainingError(f"cannot read the data files: {error}") from None
        raise TrainingError(offline_message([("dataset", settings.data.dataset)])) from None


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
