"""Fine-tune with the Hugging Face Trainer, on 1 to N processes: the run recipe every task shares.

`train(settings, recipe)` is the whole job as a plain function, read as its recipe: prepare the
run, build the trainer (the task's), train, collect the metrics, publish. `main()` is the
command line that `uv run train-local` starts (train_local.py: directly for one process, through
`accelerate launch` for several), once per process. Each run gets its own folder (src/runs.py
holds the format): checkpoints go to `<output_dir>/.checkpoints/<run_id>/` while it trains, the
finished model is published atomically to `<output_dir>/<run_id>/` and `<output_dir>/latest`
moves to it. Exactly one process (the main one) decides the run id, publishes and writes metrics; evaluation runs on
every process and the Trainer gathers the whole split before the metrics are computed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml
from accelerate import PartialState
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import TrainOutput

from src import fingerprints, flags, model_card, runs
from src.contract import Task, TrainingRecipe
from src.devices import best_device, cuda_available, training_precision
from src.errors import UserError
from src.models import distributed, sweep, train_local
from src.models.checkpoints import ManifestCallback, checkpoint_step, last_checkpoint
from src.models.supervisor import exit_with_the_launcher
from src.settings import Settings, TrainingSettings
from src.weights import ModelFiles

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
    task: Task[Any],
    callbacks: Sequence[TrainerCallback] = (),
    resume: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Fine-tune, evaluate and publish a new run (or continue `resume`); return its metrics."""
    environ = os.environ if environ is None else environ
    recipe = task.training()
    state = distributed.start(settings.training.seed)
    with contextlib.ExitStack() as stack:
        run = prepare_run(state, settings, task.model_files, resume, environ, stack)
        trial = SweepTrial(state, environ) if sweep.STORAGE_ENV in environ else None  # pruning: the study is here
        with state.main_process_first():  # the main process fills the datasets cache, the others reuse it
            own = [ManifestCallback(), *([trial] if trial else [])]
            trainer = recipe.build_trainer(settings, run.checkpoint_dir, [*own, *callbacks])
        result = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
        if trial is not None and trial.pruned:  # the sweep's pruner stopped it: nothing to publish or resume
            if state.is_main_process:
                logger.info("%s: pruned by the sweep at step %d", run.run_id, trainer.state.global_step)
                shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
            state.wait_for_everyone()
            return {"run_id": run.run_id, "pruned": True}
        metrics = collect_metrics(trainer, result, run, settings.training, environ, recipe)
        if state.is_main_process:
            publish(trainer, settings, run.run_id, metrics, recipe, task)
            logger.info("%s: %s %s", run.run_id, task.metrics[0].title, format(metrics[task.metrics[0].key], ".4g"))
            shutil.rmtree(run.checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
        state.wait_for_everyone()
    return metrics


def prepare_run(
    state: PartialState, settings: Settings, files: ModelFiles, resume: str | None, environ: Mapping[str, str],
    stack: contextlib.ExitStack,
) -> Run:  # fmt: skip
    """Agree on the run id, lock the run and record it (main process), and choose the checkpoint to resume."""
    training = settings.training
    run_id = distributed.agree(state, lambda: choose_run(settings, resume, environ))
    checkpoint_dir = runs.checkpoint_dir(training.output_dir, run_id)
    if state.is_main_process:
        stack.enter_context(runs.run_lock(training.output_dir, run_id))
        info = runs.read_info(checkpoint_dir) or {"run_id": run_id, "run_name": training.run_name,
                                                   "started_at": runs.timestamp(runs.now_utc())}  # fmt: skip
        if sweep.STUDY_ENV in environ:  # a plain `train-local --resume` must not pick a trial cut short
            info[runs.TRIAL_OF] = environ[sweep.STUDY_ENV]
        runs.write_json(checkpoint_dir / runs.RUN_INFO, info)

        def forget_if_nothing_saved(kind: type[BaseException] | None, *_: object) -> None:
            # A start refused (bad data, Ctrl-C) before a checkpoint left nothing to resume: no "unfinished run".
            if kind is not None and not any(checkpoint_dir.glob("checkpoint-*")):
                shutil.rmtree(checkpoint_dir, ignore_errors=True)

        stack.push(forget_if_nothing_saved)
    resume_from = distributed.agree(state, lambda: last_checkpoint(checkpoint_dir, files))
    if resume_from:
        logger.info("Resuming run %s from %s", run_id, resume_from.name)
    else:
        logger.info("Training run %s on %d process(es)", run_id, state.num_processes)
    return Run(run_id, checkpoint_dir, resume_from)


def collect_metrics(
    trainer: Trainer, result: TrainOutput, run: Run, training: TrainingSettings, environ: Mapping[str, str],
    recipe: TrainingRecipe,
) -> dict[str, Any]:  # fmt: skip
    """Evaluate the final model on the whole eval split (every process) and gather the run's numbers."""
    evaluation = trainer.evaluate()
    world_size = trainer.args.world_size
    return {
        "run_id": run.run_id,
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
        "train_runtime_s": result.metrics.get("train_runtime"),
        **recipe.metrics(trainer, evaluation),
    }


class SweepTrial(TrainerCallback):
    """A sweep's trial (`uv run sweep` set its variables): each evaluation to the study; pruned, training stops."""

    def __init__(self, state: PartialState, environ: Mapping[str, str]) -> None:
        self.state, self.pruned = state, False
        self.pruning = sweep.Pruning(environ) if state.is_main_process else None

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:  # fmt: skip
        pruning, step = self.pruning, state.global_step
        if distributed.agree(self.state, lambda: bool(pruning and pruning.judge(metrics or {}, step))):
            self.pruned = control.should_training_stop = True


def publish(
    trainer: Trainer, settings: Settings, run_id: str, metrics: dict[str, Any], recipe: TrainingRecipe, task: Task[Any]
) -> Path:
    """Save the model, its records and its report into a staging folder, then publish it as the run (main process)."""
    output_dir = settings.training.output_dir
    runs.remove_stale_staging(output_dir, run_id)
    staging = runs.new_staging_dir(output_dir, run_id)
    try:
        trainer.save_model(str(staging))
        info = runs.read_info(runs.checkpoint_dir(output_dir, run_id))
        info.pop(runs.TRIAL_OF, None)  # a published trial is tagged below, from this process's variables
        inputs = {"data.train_file": settings.data.train_file, "data.eval_file": settings.data.eval_file,
                  "model.checkpoint": settings.model.checkpoint}  # fmt: skip
        info.update(
            files=fingerprints.folder_files(staging),  # what the model is made of, checked at every load
            inputs=fingerprints.local_inputs(inputs),  # what it was made from (evaluate and a task check them)
            finished_at=runs.timestamp(runs.now_utc()),
            world_size=metrics["world_size"],
            max_length=settings.model.max_length,  # serving truncates where training did
            base_model=settings.model.checkpoint,
            **recipe.run_info(trainer, settings),
        )
        if sweep.STUDY_ENV in os.environ:  # a sweep's trial: tagged, and `latest` stays where it is
            info["sweep"] = {"study": os.environ[sweep.STUDY_ENV], "trial": int(os.environ[sweep.TRIAL_ENV]),
                             "params": json.loads(os.environ.get(sweep.PARAMS_ENV, "{}"))}  # fmt: skip
        runs.write_json(staging / runs.RUN_INFO, info)
        runs.write_json(staging / runs.METRICS, metrics)
        used = yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
        runs.write_text(staging / runs.RUN_SETTINGS, used)
        trainer.state.save_to_json(str(staging / runs.TRAINER_STATE))  # the log history the report's curves draw
        try:  # report.md and pictures, in place before the run appears
            recipe.report(staging, settings, metrics, output_dir / run_id)
        except Exception:  # costs the report, not the trained model
            logger.exception("Could not write the evaluation report: `uv run evaluate %s` writes it", run_id)
        try:  # README.md: the model card (Hub metadata, the evaluation, the report's pictures)
            model_card.write(staging, settings, metrics, task.name, task.metrics, run_id)
        except Exception:  # costs the card, not the trained model
            logger.exception("Could not write the model card of %s", run_id)
        final = runs.publish(staging, output_dir, run_id, move_latest=sweep.STUDY_ENV not in os.environ)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if sweep.STUDY_ENV in os.environ:
        logger.info("Saved %s (a trial of sweep %s; %s stays)", final, os.environ[sweep.STUDY_ENV], runs.LATEST)
    else:
        logger.info("Saved %s; %s now points at it", final, output_dir / runs.LATEST)
    return final


def training_arguments(training: TrainingSettings, checkpoint_dir: Path) -> dict[str, Any]:
    """The Trainer's arguments every task sets alike, from training.*; the task adds its own and builds them."""
    dtype = training_precision(training.mixed_precision)
    return {
        "output_dir": str(checkpoint_dir),
        "run_name": training.run_name,
        "num_train_epochs": training.num_train_epochs,
        "max_steps": training.max_steps,
        "per_device_train_batch_size": training.per_device_train_batch_size,
        "per_device_eval_batch_size": training.per_device_eval_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "gradient_checkpointing": training.gradient_checkpointing,
        "learning_rate": training.learning_rate,
        "weight_decay": training.weight_decay,
        "warmup_steps": training.warmup_fraction,  # a float below 1 is a fraction of the steps
        "seed": training.seed,
        "logging_steps": training.logging_steps,
        "save_strategy": "steps",
        "save_steps": training.save_steps,
        "save_total_limit": training.save_total_limit,
        "eval_strategy": "steps" if training.eval_steps else "no",  # and once at the end, in train()
        "eval_steps": training.eval_steps,
        "dataloader_num_workers": training.dataloader_num_workers,
        "dataloader_pin_memory": cuda_available(),
        "report_to": "none",
        "use_cpu": best_device() == "cpu",  # on CPU the processes of a multi-process run join one gloo group
        "accelerator_config": {"use_configured_state": True},  # the state distributed.start() set up
        "bf16": dtype == "bf16",
        "fp16": dtype == "fp16",
    }


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


def main(argv: Sequence[str], task: Task[Any]) -> int:
    """One training process of `uv run train-local` (`python -m src train-process`)."""
    args = flags.TRAIN_LOCAL.parse(argv)
    exit_with_the_launcher(os.environ)
    # Libraries log at WARNING and above; this project's own progress at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("src").setLevel(logging.INFO)
    try:
        metrics = train(
            train_local.run_settings(args, task, build_smoke_assets=True),
            task,
            resume=os.environ.get(train_local.RESUME_ENV) or None,
        )
    finally:
        distributed.stop()
    if PartialState().is_main_process:
        print(json.dumps(metrics, indent=2))
        if sweep.STUDY_ENV in os.environ:  # one line the sweep's driver reads back (on the cloud, from the job's log)
            trial = {
                "study": os.environ[sweep.STUDY_ENV],
                "trial": int(os.environ[sweep.TRIAL_ENV]),
                "metrics": metrics,
            }
            print(sweep.RESULT_PREFIX + json.dumps(trial), flush=True)
    return 0
