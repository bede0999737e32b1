"""What a task hands the core: its settings model, its model folder, its recipes. Types only.

The core (every module of src/ but src/config.py and src/task/) never imports the task:
`python -m src COMMAND` (src/__main__.py) imports this project's task, `src.task.TASK`, and
hands it to the command it runs; mypy checks TASK against these types. A task is data and
plain functions, no class to inherit from. What needs the training stack (torch, the Trainer)
is loaded only by the commands that use it: `Task.training()`, `Evaluation.run()` and
`Prediction.run()` import it when called, so that `compare` or the server's parent stay light.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from src.flags import Command
from src.weights import ModelFiles

if TYPE_CHECKING:
    import litserve as ls
    from transformers import Trainer, TrainerCallback

    from src.settings import Settings
    from src.tables import Table


class ModelFolder(Protocol):
    """A checked model folder: what `Task.inspect` returns, and every recipe below is handed."""

    @property
    def path(self) -> Path: ...

    @property
    def max_length(self) -> int: ...  # tokens: where the run truncated when it trained


Folder = TypeVar("Folder", bound=ModelFolder)


@dataclass(frozen=True)
class Metric:
    """One number of a run's metrics.json, as `compare` shows it and a gate or a search judges it."""

    key: str
    title: str
    spec: str = ".4f"
    higher_is_better: bool = True
    # The Trainer's evaluation log key that follows it during training, in the same order (pruning a sweep's
    # trials compares them); None: eval_<key>.
    during_training: str | None = None


@dataclass(frozen=True)
class Engine:
    """What the serving workers run (a runtime and a precision), and the lines saying how it was chosen."""

    runtime: str
    precision: str
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        if "auto" in (self.runtime, self.precision):
            return "the runtime and precision its device suits (the worker's line says which)"
        return f"{self.runtime} {self.precision}"


@dataclass(frozen=True)
class Serving(Generic[Folder]):
    command: Command  # serve's flags: the shared ones (src/flags.py) and the task's
    route: str  # "/predict"
    example: Mapping[str, Any]  # a request body the route answers (docs, tests, benchmarks)
    # Before the server starts, in its parent (no torch: LitServe forks it): what the workers run.
    choose: Callable[[Any, Folder], Engine]  # (src/config.py's ServingSettings, folder)
    # (folder, serving settings, engine, threads): a src.deployment.worker.WorkerAPI
    api: Callable[[Folder, Any, Engine, int], ls.LitAPI]
    describe: Callable[[Folder], str]  # what the start line says about the model ("labels neg, pos")
    # A local folder the model loads beside its own (the base model a run's weights apply to): serve-cloud
    # uploads it too.
    local_base: Callable[[Folder], Path | None] = lambda folder: None


class TrainingRecipe(Protocol):
    """A task's part of `train(settings)` (src/models/train_model.py holds the rest)."""

    # The data, the model and the Trainer (the main process builds first: the others reuse its caches).
    def build_trainer(self, settings: Any, checkpoint_dir: Path, callbacks: Sequence[TrainerCallback]) -> Trainer: ...

    def metrics(self, trainer: Trainer, evaluation: Mapping[str, float]) -> dict[str, Any]: ...

    def run_info(self, trainer: Trainer, settings: Any) -> dict[str, Any]: ...  # what run.json records besides

    def report(self, staging: Path, settings: Any, metrics: Mapping[str, Any], published_as: Path) -> None: ...


# (folder, args, target): evaluates the run (its split, or --data FILE) into `target`; the summary to print.
EvaluationRecipe = Callable[[Folder, argparse.Namespace, Path], dict[str, Any]]
# (folder, serving settings, args, the inputs `Prediction.inputs` read, the table): each row with its answer.
PredictionRecipe = Callable[[Folder, Any, argparse.Namespace, Any, "Table"], list[dict[str, Any]]]


@dataclass(frozen=True)
class Evaluation(Generic[Folder]):
    """`uv run evaluate`: the task's flags, and its evaluation (loaded when it runs)."""

    command: Command
    run: Callable[[], EvaluationRecipe[Folder]]


@dataclass(frozen=True)
class Prediction(Generic[Folder]):
    """`uv run predict INPUT`: reads the inputs from a table (checked before the model loads), answers each row."""

    command: Command
    suffix: str  # the default output is <input>.<suffix>.<ext>: "predictions"
    inputs: Callable[[Table, Path, argparse.Namespace], Any]  # (table, model folder, args): a bad row is named
    columns: Callable[[Folder], Sequence[str]]  # what each row gains (an input column of that name is refused)
    run: Callable[[], PredictionRecipe[Folder]]


@dataclass(frozen=True)
class Task(Generic[Folder]):
    name: str  # the task the project was generated for
    settings: type[Settings]  # src/config.py's model
    model_files: ModelFiles  # what train-local publishes and checkpoints hold
    metrics: tuple[Metric, ...]  # of metrics.json: compare's columns, the first the headline
    smoke: Callable[[Path, int], None]  # (folder, seed): write `--smoke`'s model/, train.jsonl, eval.jsonl there
    inspect: Callable[[Path], Folder]  # the start-up check (no torch): a BadModelFolderError says what is wrong
    training: Callable[[], TrainingRecipe]
    serving: Serving[Folder]
    evaluation: Evaluation[Folder]
    prediction: Prediction[Folder]
