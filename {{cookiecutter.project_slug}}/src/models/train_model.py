"""Fine-tune a sequence classifier with the Hugging Face Trainer, on 1 to N processes.

`train(settings)` is the whole job as a plain function; `main()` is the command line that
`uv run train-local` reaches through `accelerate launch` (see launch.py), once per process.
Each run gets its own folder (see src/runs.py for the format): checkpoints go to
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
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import datasets
import numpy as np
import torch
import yaml
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
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

from src import cli, runs
from src.cli import UserError
from src.config import Settings, TrainingSettings
from src.evaluation.evaluate import write_run_report
from src.evaluation.metrics import accuracy, macro_f1
from src.evaluation.report import TRAINER_STATE
from src.models import launch
from src.models.data import label_names, load_splits, tokenize
from src.models.hub import offline_message

logger = logging.getLogger(__name__)
DAMAGED_PREFIX = "damaged-"
T = TypeVar("T")


class TrainingError(UserError):
    """Training cannot start; the message says what to change."""


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy and macro F1 (src/evaluation/metrics.py, numpy: `evaluate.load` would need the Hub)."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    predicted = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(prediction.label_ids)
    return {
        "accuracy": accuracy(labels, predicted),
        "f1": macro_f1(labels, predicted),
        "count": float(len(labels)),  # every process's share, gathered: the whole split
    }


def precision(choice: str) -> str:
    """bf16 where the GPU supports it, else fp16 on CUDA; full precision on CPU and MPS."""
    if choice != "auto":
        return choice
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[-1])


def damage(checkpoint: Path) -> str | None:
    """Why a Trainer checkpoint cannot be resumed from, or None when it looks complete.

    trainer_state.json is written last, so a checkpoint cut off by a kill lacks it. Torch
    files are zip archives (a CRC check finds truncation and garbage); safetensors files
    declare their size in their header; JSON files must parse.
    """
    if not (checkpoint / "trainer_state.json").is_file():
        return "trainer_state.json is missing (the save was cut off)"
    weights = [
        checkpoint / name for name in ("model.safetensors", "pytorch_model.bin") if (checkpoint / name).is_file()
    ]
    if not weights:
        return "no model weights (model.safetensors)"
    for required in ("config.json", "optimizer.pt", "scheduler.pt"):
        if not (checkpoint / required).is_file():
            return f"{required} is missing"
    for path in sorted(checkpoint.iterdir()):
        problem = _file_damage(path)
        if problem:
            return f"{path.name}: {problem}"
    return None


def _file_damage(path: Path) -> str | None:
    try:
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix in {".pt", ".pth", ".bin"}:
            with zipfile.ZipFile(path) as archive:
                broken = archive.testzip()
            if broken:
                return f"corrupt entry {broken}"
        elif path.suffix == ".safetensors":
            return _safetensors_damage(path)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        return f"unreadable ({type(error).__name__}: {error})"[:200]
    return None


def _safetensors_damage(path: Path) -> str | None:
    with path.open("rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        if not 2 <= header_size <= 100_000_000:
            return "not a safetensors file"
        header = json.loads(handle.read(header_size))
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    expected = 8 + header_size + max(ends, default=0)
    actual = path.stat().st_size
    return f"{actual} bytes where the header promises {expected} (truncated)" if actual != expected else None


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest checkpoint that can be resumed from; damaged newer ones are set aside.

    A damaged checkpoint is renamed `damaged-checkpoint-<step>` (the Trainer ignores it and the
    folder goes when the run finishes) and the one before it is used, or the run starts afresh.
    """
    candidates = [path for path in checkpoint_dir.glob("checkpoint-*") if path.name.split("-")[-1].isdigit()]
    for candidate in sorted(candidates, key=_step, reverse=True):
        problem = damage(candidate)
        if problem is None:
            return candidate
        aside = candidate.with_name(f"{DAMAGED_PREFIX}{candidate.name}")
        shutil.rmtree(aside, ignore_errors=True)
        candidate.rename(aside)
        logger.warning("Checkpoint %s is damaged (%s): set aside as %s", candidate, problem, aside.name)
    return None


def use_cpu() -> bool:
    return not torch.cuda.is_available() and not torch.backends.mps.is_available()


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
        eval_strategy="steps" if training.eval_steps else "no",  # and once at the end, in train()
        eval_steps=training.eval_steps,
        load_best_model_at_end=training.keep_best_model,
        metric_for_best_model=training.best_model_metric if training.keep_best_model else None,
        dataloader_num_workers=training.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        report_to="none",
        use_cpu=use_cpu(),  # on CPU the processes of a multi-process run join one gloo group
        accelerator_config={"use_configured_state": True},  # the PartialState train() set up
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


def agree(state: PartialState, decide: Callable[[], T]) -> T:
    """Run `decide` on the main process only and hand its result (or its error) to every process."""
    outcome: list[Any] = [None, None]
    if state.is_main_process:
        try:
            outcome = [decide(), None]
        except UserError as error:
            outcome = [None, str(error)]
    broadcast_object_list(outcome)
    if outcome[1] is not None:
        raise UserError(outcome[1])
    result: T = outcome[0]
    return result


def choose_run(settings: Settings, resume: str | None, environ: Mapping[str, str]) -> str:
    """The run id: the one to resume, SkyPilot's stable one, or a new unique one (main process)."""
    output_dir, run_name = settings.training.output_dir, settings.training.run_name
    if resume:
        if not runs.checkpoint_dir(output_dir, runs.check_run_id(resume, "--resume")).is_dir():
            raise TrainingError(f"--resume {resume}: no unfinished run of that name under {output_dir}")
        return resume
    wanted = runs.run_id_for(run_name, runs.now_utc(), environ)
    if environ.get("SKYPILOT_TASK_ID"):  # a recovered managed job comes back to its own run
        runs.checkpoint_dir(output_dir, wanted).mkdir(parents=True, exist_ok=True)
        return wanted
    return runs.reserve_run_id(output_dir, wanted)


def quiet_unless_main(state: PartialState) -> None:
    """Logs and progress bars once, from the main process, not once per process."""
    if not state.is_main_process:
        logger.setLevel(logging.WARNING)
        logging.getLogger("transformers").setLevel(logging.ERROR)
        datasets.disable_progress_bars()


def train(
    settings: Settings,
    callbacks: Sequence[TrainerCallback] = (),
    resume: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Fine-tune, evaluate and publish a new run (or continue `resume`); return its metrics."""
    environ = os.environ if environ is None else environ
    training = settings.training
    state = PartialState(cpu=use_cpu())
    launch.mark_joined(os.environ)  # every process of every node has joined once the state is set up
    if state.device.type == "cpu":
        # accelerate names each CPU process's device "cpu:0"; torch.load cannot map the
        # optimizer state saved under that name back, so resuming a multi-process CPU run
        # would fail. Plain "cpu" is the same device.
        state.device = torch.device("cpu")
    quiet_unless_main(state)
    set_seed(training.seed)
    with contextlib.ExitStack() as stack:
        run_id = agree(state, lambda: choose_run(settings, resume, environ))
        checkpoint_dir = runs.checkpoint_dir(training.output_dir, run_id)
        if state.is_main_process:
            stack.enter_context(runs.run_lock(training.output_dir, run_id))
            info = runs.read_info(checkpoint_dir) or {"run_id": run_id, "run_name": training.run_name,
                                                       "started_at": runs.started_at(runs.now_utc())}  # fmt: skip
            runs.write_json(checkpoint_dir / runs.RUN_INFO, info)
        with state.main_process_first():  # the main process fills the datasets cache, the others reuse it
            splits = _load_data(settings)
            labels = label_names(splits, settings.data)
            tokenizer, model = _load_model(settings, labels)
            encoded = tokenize(splits, tokenizer, settings.data, settings.model.max_length)
        resume_from = agree(state, lambda: last_checkpoint(checkpoint_dir))
        if resume_from:
            logger.info("Resuming run %s from %s", run_id, resume_from.name)
        else:
            logger.info("Training run %s on %d process(es)", run_id, state.num_processes)
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
        world_size = trainer.args.world_size
        metrics: dict[str, Any] = {
            "run_id": run_id,
            "accuracy": evaluation["eval_accuracy"],
            "f1": evaluation["eval_f1"],
            "eval_loss": evaluation["eval_loss"],
            "train_loss": result.training_loss,
            "global_step": trainer.state.global_step,
            "resumed_from_step": _step(resume_from) if resume_from else None,
            "world_size": world_size,
            "num_machines": int(environ.get("SKYPILOT_NUM_NODES", "1") or 1),
            "effective_batch_size": training.per_device_train_batch_size * world_size,
            "train_samples": len(encoded["train"]),
            "eval_samples": int(evaluation["eval_count"]),
            "train_runtime_s": result.metrics.get("train_runtime"),
        }
        if state.is_main_process:
            _publish(trainer, settings, run_id, metrics, labels)
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
        state.wait_for_everyone()
    return metrics


def _publish(trainer: Trainer, settings: Settings, run_id: str, metrics: dict[str, Any], labels: list[str]) -> Path:
    output_dir = settings.training.output_dir
    runs.remove_stale_staging(output_dir, run_id)
    staging = runs.new_staging_dir(output_dir, run_id)
    try:
        trainer.save_model(str(staging))
        info = runs.read_info(runs.checkpoint_dir(output_dir, run_id))
        info.update(
            finished_at=runs.started_at(runs.now_utc()),
            world_size=metrics["world_size"],
            max_length=settings.model.max_length,  # serving truncates where training did
            labels=labels,
            base_model=settings.model.checkpoint,
        )
        runs.write_json(staging / runs.RUN_INFO, info)
        runs.write_json(staging / runs.METRICS, metrics)
        used = yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
        (staging / "settings.yaml").write_text(used, encoding="utf-8")
        trainer.state.save_to_json(str(staging / TRAINER_STATE))  # the log history the report's curves draw
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


def main(argv: Sequence[str] | None = None) -> int:
    args = launch.parse_args(sys.argv[1:] if argv is None else argv)
    launch.exit_with_the_launcher(os.environ)
    # Libraries log at WARNING and above; this project's own progress at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)  # named __main__ under `python -m`
    try:
        metrics = train(launch.run_settings(args), resume=os.environ.get(launch.RESUME_ENV) or None)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # without it the process aborts at exit
    if PartialState().is_main_process:
        print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    cli.run(main)
