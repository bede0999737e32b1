"""A sequence classifier's part of training: the data, the model and the Trainer; its metrics and report.

src/models/train_model.py runs the recipe (prepare the run, train, publish) around these: the
splits are tokenized and padded per batch, the model gets a new head for data.labels, and the
Trainer evaluates accuracy and macro F1 every training.eval_steps (and at the end, on the whole
split gathered from every process).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from src.config import Settings
from src.hub import offline_message, reading
from src.models.train_model import TrainingError, training_arguments
from src.task.data import label_names, load_splits, tokenize
from src.task.metrics import accuracy, cross_entropy, macro_f1
from src.task.scoring import write_run_report

logger = logging.getLogger(__name__)


def build_trainer(settings: Settings, checkpoint_dir: Path, callbacks: Sequence[TrainerCallback]) -> Trainer:
    """The data, the model with a head for the labels, and the Trainer that fine-tunes one on the other."""
    with reading(settings.data):
        splits = load_splits(settings.data)
    labels = label_names(splits["train"], settings.data)
    tokenizer, model = _load_model(settings, labels)
    encoded = tokenize(splits, tokenizer, settings.data, settings.model.max_length)
    training = settings.training
    arguments = TrainingArguments(
        **training_arguments(training, checkpoint_dir),
        train_sampling_strategy="group_by_length" if training.group_by_length else "random",
        load_best_model_at_end=training.keep_best_model,
        metric_for_best_model=training.best_model_metric if training.keep_best_model else None,
        # A classifier's loss is a mean over its examples; "tokens across devices" would multiply
        # it by the process count, in evaluation (eval_loss) and in the gradients alike.
        average_tokens_across_devices=False,
    )
    return Trainer(
        model=model,
        args=arguments,
        train_dataset=encoded["train"],
        eval_dataset=encoded["eval"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=list(callbacks),
    )


def metrics(trainer: Trainer, evaluation: Mapping[str, float]) -> dict[str, Any]:
    return {
        "accuracy": evaluation["eval_accuracy"],
        "f1": evaluation["eval_f1"],
        # The Trainer's eval_loss weighs a short last batch as a full one: the mean over the examples instead.
        "eval_loss": evaluation["eval_cross_entropy"],
        "eval_samples": int(evaluation["eval_count"]),  # gathered from every process: the whole split
    }


def run_info(trainer: Trainer, settings: Settings) -> dict[str, Any]:
    config: Any = cast(Any, trainer.model).config
    return {"labels": [config.id2label[index] for index in range(config.num_labels)]}


def report(staging: Path, settings: Settings, metrics: Mapping[str, Any], published_as: Path) -> None:
    """report.md and its pictures: one more pass over the eval split, with the server's classifier."""
    write_run_report(staging, settings.data, settings.training.best_model_metric, published_as)


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy and macro F1 (src/task/metrics.py, numpy: `evaluate.load` would need the Hub)."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    predicted = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(prediction.label_ids)
    return {
        "accuracy": accuracy(labels, predicted),
        "f1": macro_f1(labels, predicted),
        "cross_entropy": cross_entropy(logits, labels),
        "count": float(len(labels)),  # every process's share, gathered: the whole split
    }


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
