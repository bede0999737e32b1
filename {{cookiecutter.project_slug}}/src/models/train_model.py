"""Fine-tune a sequence classifier with the Hugging Face Trainer.

`train(settings)` is the whole job as a plain function; `main()` is the command line
that `uv run train-local` reaches through `accelerate launch` (see launch.py).
Checkpoints go to `<output_dir>/.checkpoints/<run_name>/`: a run started again under
the same name resumes from the newest one. The finished model is published
atomically to `<output_dir>/<run_name>/` and `<output_dir>/latest` moves to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from src.config import Settings, SettingsError, TrainingSettings, load_settings
from src.models import artifacts, smoke
from src.models.data import DataError, label_names, load_splits, tokenize
from src.models.hub import offline_message

logger = logging.getLogger(__name__)
CHECKPOINTS = ".checkpoints"


class TrainingError(Exception):
    """Training cannot start; the message says what to change."""


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy and macro F1 with numpy (`evaluate.load` would need the Hub)."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    predicted = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(prediction.label_ids)
    f1_scores = []
    for label in np.union1d(labels, predicted):
        true_positive = np.sum((predicted == label) & (labels == label))
        denominator = np.sum(predicted == label) + np.sum(labels == label)
        f1_scores.append(2 * true_positive / denominator if denominator else 0.0)
    return {"accuracy": float(np.mean(predicted == labels)), "f1": float(np.mean(f1_scores))}


def precision(choice: str) -> str:
    """bf16 where the GPU supports it, else fp16 on CUDA; full precision on CPU and MPS."""
    if choice != "auto":
        return choice
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The Trainer's newest complete `checkpoint-<step>` folder, if any.

    trainer_state.json is written last: a checkpoint cut off by a kill or a preemption
    lacks it and is passed over for the one before.
    """
    steps = [
        path
        for path in checkpoint_dir.glob("checkpoint-*")
        if path.name.split("-")[-1].isdigit() and (path / "trainer_state.json").is_file()
    ]
    return max(steps, key=lambda path: int(path.name.split("-")[-1]), default=None)


def training_arguments(training: TrainingSettings, checkpoint_dir: Path) -> TrainingArguments:
    dtype = precision(training.mixed_precision)
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
        eval_strategy="no",
        dataloader_num_workers=training.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        report_to="none",
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


def train(settings: Settings, callbacks: Sequence[TrainerCallback] = ()) -> dict[str, Any]:
    """Fine-tune, evaluate and publish; return the metrics written to metrics.json."""
    training = settings.training
    set_seed(training.seed)
    splits = _load_data(settings)
    labels = label_names(splits, settings.data)
    tokenizer, model = _load_model(settings, labels)
    encoded = tokenize(splits, tokenizer, settings.data, settings.model.max_length)

    checkpoint_dir = training.output_dir / CHECKPOINTS / training.run_name
    resume_from = last_checkpoint(checkpoint_dir)
    if resume_from:
        logger.info("Resuming run %r from %s", training.run_name, resume_from)
    trainer = Trainer(
        model=model,
        args=training_arguments(training, checkpoint_dir),
        train_dataset=encoded["train"],
        eval_dataset=encoded["eval"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=list(callbacks),
    )
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    evaluation = trainer.evaluate()
    metrics: dict[str, Any] = {
        "accuracy": evaluation["eval_accuracy"],
        "f1": evaluation["eval_f1"],
        "eval_loss": evaluation["eval_loss"],
        "train_loss": result.training_loss,
        "global_step": trainer.state.global_step,
        "resumed_from_step": _step_of(resume_from),
        "train_samples": len(encoded["train"]),
        "eval_samples": len(encoded["eval"]),
        "train_runtime_s": result.metrics.get("train_runtime"),
    }
    if trainer.is_world_process_zero():
        _publish(trainer, settings, metrics)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: a rerun starts afresh
        if checkpoint_dir.parent.is_dir() and not any(checkpoint_dir.parent.iterdir()):
            checkpoint_dir.parent.rmdir()
    return metrics


def _step_of(checkpoint: Path | None) -> int | None:
    return int(checkpoint.name.rsplit("-", 1)[-1]) if checkpoint else None


def _publish(trainer: Trainer, settings: Settings, metrics: dict[str, Any]) -> Path:
    output_dir, run_name = settings.training.output_dir, settings.training.run_name
    artifacts.remove_stale_staging(output_dir, run_name)
    staging = artifacts.new_staging_dir(output_dir, run_name)
    try:
        trainer.save_model(str(staging))
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        used = yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
        (staging / "settings.yaml").write_text(used, encoding="utf-8")
        final = artifacts.publish(staging, output_dir, run_name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Saved %s (accuracy %.3f); %s now points at it", final, metrics["accuracy"], output_dir / "latest")
    return final


def load_run_settings(use_smoke: bool) -> Settings:
    """Settings from the file and environment; with `use_smoke`, the offline assets swapped in."""
    settings = load_settings()
    if not use_smoke:
        return settings
    assets = smoke.build(settings.training.output_dir / ".smoke", seed=settings.training.seed)
    return load_settings(overrides=smoke.overrides(assets))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune the model in configs/settings.yaml.")
    parser.add_argument("--smoke", action="store_true", help="offline: tiny model and data, seconds on a CPU")
    args = parser.parse_args(argv)
    # Libraries log at WARNING and above; this project's own progress at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)  # named __main__ under `python -m`
    try:
        metrics = train(load_run_settings(args.smoke))
    except (SettingsError, TrainingError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
