"""`uv run sweep`: a hyperparameter search whose trials are real training runs, and that survives a crash.

The study (Optuna, sampler and pruner from the `sweep` section) lives beside the runs, in
`<training.output_dir>/sweeps/<study>/journal.log`: Optuna's journal storage appends every step of it under a
file lock, so a driver killed at any moment leaves a study that the same command continues. This process is
the driver: it asks the study for a trial's parameters, runs `train-local` with them (the same launcher,
devices and processes as any run; the parameters as SECTION__FIELD variables), reads the run's metric and
tells the study. Each trial publishes a normal run folder (`<study>-t<N>-<time>`) whose run.json names the
study, the trial and its parameters; trials never move `latest`. The pruner stops a trial (unpublished) whose
evaluation every eval_steps is worse than the earlier trials' at that step (Pruning, in the training process).
It ends when the study holds `sweep.trials` complete trials, naming the best run in `sweeps/<study>/report.md`
(`--promote`: then the best run goes through the promotion gate, as `uv run promote` would take it).
Crash-safe: a trial a killed driver left running is settled by the next run (cut_short); completed trials are
never redone. Ctrl-C stops the running trial, marks it failed, exits 130. A second driver is refused (a lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src import errors, flags, lifeline, runs
from src.contract import Task
from src.errors import UserError
from src.settings import SMOKE_SETTINGS_FILE, Settings, load_settings
from src.sweep_settings import suggest, whole_number_field

SWEEPS = "sweeps"
JOURNAL = "journal.log"
STUDY_ENV, TRIAL_ENV, PARAMS_ENV = "SWEEP_STUDY", "SWEEP_TRIAL", "SWEEP_PARAMS"
STORAGE_ENV, WATCH_ENV = "SWEEP_STORAGE", "SWEEP_WATCH"  # the journal, and the Trainer log key pruning watches
PRUNED_PREFIX = "pruned-"
RESULT_PREFIX = "sweep-result: "  # a trial's last line: its run and metrics as JSON (how sweep-cloud reads them)
MAX_FAILURES_IN_A_ROW = 3
STUDY_NAME_MAX = 53  # a trial's run is <study>-t<N>, and a run name is at most 60 characters


def study_name(settings: Settings) -> str:
    """sweep.study, or <training.run_name>-sweep: short enough to name its trials' runs."""
    name = settings.sweep.study or f"{settings.training.run_name}-sweep"
    if len(name) > STUDY_NAME_MAX:
        raise UserError(f"study name {name!r} has {len(name)} characters, at most {STUDY_NAME_MAX} (a trial's run is "
                        "named <study>-t<N>): give a shorter --study")  # fmt: skip
    return name


def study_dir(settings: Settings, study: str) -> Path:
    return settings.training.output_dir / SWEEPS / study


def storage(journal: Path) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(journal)))


def metric_of(settings: Settings, task: Task[Any]) -> tuple[str, bool, str]:
    """(metric key, maximize?, the Trainer's evaluation log key that tracks it during training)."""
    wanted = settings.sweep.metric or task.metrics[0].key
    for metric in task.metrics:
        if metric.key == wanted:
            return (
                metric.key,
                metric.higher_is_better,
                metric.during_training or f"eval_{metric.key}".replace("eval_eval_", "eval_"),
            )
    known = ", ".join(metric.key for metric in task.metrics)
    raise UserError(f"sweep.metric {wanted!r}: not a metric of this task's runs (use one of {known})")


def check_values(settings: Settings, task: Task[Any], overlays: list[Path]) -> None:
    """Every value a trial may give a field is one the field accepts (the settings model says), before any trial."""
    space = settings.sweep.space
    if not space:
        raise UserError("sweep.space is empty: name at least one settings field to search, e.g. "
                        "training.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}")  # fmt: skip
    for name, parameter in space.items():
        values = parameter.choices if parameter.choices is not None else [parameter.low, parameter.high]
        for value in values:
            section, field = name.split(".", 1)
            try:
                load_settings(task.settings, overlays=overlays, overrides={section: {field: value}})
            except UserError as error:
                raise UserError(f"sweep.space {name}: {value!r} is not a value it takes ({error})"[:400]) from None


def trial_settings(study: str, number: int, params: Mapping[str, Any]) -> dict[str, str]:
    """The variables that make a training run this trial: its parameters (SECTION__FIELD), run name and tags."""
    env = {name.upper().replace(".", "__"): json.dumps(value) if not isinstance(value, str) else value
           for name, value in params.items()}  # fmt: skip
    env.update({"TRAINING__RUN_NAME": f"{study}-t{number}", STUDY_ENV: study, TRIAL_ENV: str(number),
                PARAMS_ENV: json.dumps(dict(params))})  # fmt: skip
    return env


def trial_env(study: str, number: int, params: Mapping[str, Any], journal: Path, watch: str) -> dict[str, str]:
    """This process's environment for a local trial, with the study's journal for pruning."""
    env = {key: value for key, value in os.environ.items() if key != "TRAINING__RUN_NAME"}
    return {**env, **trial_settings(study, number, params), STORAGE_ENV: str(journal), WATCH_ENV: watch}


@dataclass(frozen=True)
class Outcome:
    """How a trial ended: its metric (None: no usable result), its run, pruned, and the exit code."""

    value: float | None
    run: str | None = None
    pruned: bool = False
    code: int = 0


Trials = Callable[[int, Mapping[str, Any]], Outcome]  # runs trial N with these parameters


def run_trial(command: list[str], env: dict[str, str]) -> int:
    process = subprocess.Popen(command, env=env, preexec_fn=lifeline.ending_with_this_process)
    try:
        return process.wait()
    except BaseException:  # Ctrl-C reached the trial too (same terminal); SIGTERM: pass it on
        if process.poll() is None:
            process.terminate()
        process.wait()
        raise


class LocalTrials:
    """Each trial a `train-local` on this machine (the same launcher, devices and processes as any run)."""

    def __init__(self, settings: Settings, smoke: bool, folder: Path, key: str, watch: str, study: str) -> None:
        self.settings, self.smoke, self.folder, self.key, self.watch, self.study = (
            settings, smoke, folder, key, watch, study)  # fmt: skip

    def __call__(self, number: int, params: Mapping[str, Any]) -> Outcome:
        command = [sys.executable, "-m", "src", "train-local", *(["--smoke"] if self.smoke else [])]
        env = trial_env(self.study, number, params, self.folder / JOURNAL, self.watch)
        (self.folder / f"{PRUNED_PREFIX}{number}").unlink(missing_ok=True)  # an earlier study's, of the same name
        code = run_trial(command, env)
        if (self.folder / f"{PRUNED_PREFIX}{number}").exists():
            return Outcome(None, pruned=True, code=code)
        run = runs.trial_run(self.settings.training.output_dir, self.study, number)
        if code != 0 or run is None:
            return Outcome(None, code=code or 1)
        value = runs.read_json(run / runs.METRICS).get(self.key)
        return Outcome(float(value) if isinstance(value, int | float) else None, run.name, code=0)


@contextlib.contextmanager
def open_study(settings: Settings, study_name: str, key: str, maximize: bool) -> Iterator[Any]:
    """The study in <output_dir>/sweeps/<study>/journal.log, this process its only driver (a lock beside it);
    a study made for another metric is refused (its trials' values would not compare)."""
    import optuna

    folder = study_dir(settings, study_name)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "driver.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `uv run sweep` is driving study {study_name} ({folder}): wait for it to "
                            "end, or give another --study") from None  # fmt: skip
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(storage=storage(folder / JOURNAL), study_name=study_name, load_if_exists=True,
                                    **study_options(settings, maximize))  # fmt: skip
        made_for = study.user_attrs.get("metric", key)  # a study from before this attribute: its direction decides
        made_to, wanted = study.direction.name.lower(), "maximize" if maximize else "minimize"
        if made_for != key or made_to != wanted:
            raise UserError(f"study {study_name} was made to {made_to} {made_for}, not to {wanted} {key}: set "
                            "sweep.metric back or give another --study")  # fmt: skip
        study.set_user_attr("metric", key)
        yield study


def study_options(settings: Settings, maximize: bool) -> dict[str, Any]:
    import optuna

    sweep = settings.sweep
    return {
        "direction": "maximize" if maximize else "minimize",
        "sampler": optuna.samplers.RandomSampler(seed=settings.training.seed) if sweep.sampler == "random"
        else optuna.samplers.TPESampler(seed=settings.training.seed),
        "pruner": optuna.pruners.MedianPruner(n_startup_trials=2) if sweep.pruner == "median"
        else optuna.pruners.NopPruner(),
    }  # fmt: skip


def cut_short(study: Any, output_dir: Path) -> list[int]:
    """Settle the trials a killed driver left running: one that published its run is told its metric; the others
    are marked failed and what they left is removed (new trials take their place). The numbers of those."""
    import optuna

    cut: list[int] = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        run = runs.trial_run(output_dir, study.study_name, trial.number)
        value = runs.read_json(run / runs.METRICS).get(study.user_attrs.get("metric", "")) if run else None
        if run and isinstance(value, int | float) and math.isfinite(value):
            study.tell(trial.number, float(value))  # the driver was killed between the run's end and this
            print(f"trial {trial.number} of {study.study_name} had finished ({run.name}) when the driver stopped: kept")
        else:
            runs.discard_trial(output_dir, study.study_name, trial.number)
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            print(f"trial {trial.number} of {study.study_name} was cut short by an earlier stop: it is run again anew")
            cut.append(trial.number)
    return cut


def ask(study: Any, settings: Settings) -> tuple[Any, dict[str, Any]]:
    trial = study.ask()
    return trial, {name: suggest(trial, name, parameter, whole_number_field(settings, name))
                   for name, parameter in settings.sweep.space.items()}  # fmt: skip


def main(argv: Sequence[str], task: Task[Any]) -> int:
    args = flags.SWEEP.parse(argv)
    overlays = [SMOKE_SETTINGS_FILE] if args.smoke else []
    settings = load_settings(task.settings, overlays=overlays, flags=flags.SWEEP.settings_flags(args))
    name = study_name(settings)
    key, maximize, watch = metric_of(settings, task)
    check_values(settings, task, overlays)
    folder = study_dir(settings, name)
    with open_study(settings, name, key, maximize) as study:
        cut_short(study, settings.training.output_dir)
        drive(study, settings, LocalTrials(settings, args.smoke, folder, key, watch, name), key)
    from src import promotion
    from src.evaluation.sweep_report import finish

    best = finish(study, settings.training.output_dir, folder, key)
    return promotion.after_training(settings, task, best) if best and settings.promotion.after_training else 0


def drive(study: Any, settings: Settings, trials: Trials, key: str) -> None:
    """Ask, run, tell until the study holds `sweep.trials` complete trials."""
    import optuna

    complete = optuna.trial.TrialState.COMPLETE
    failures = 0
    while len(study.get_trials(deepcopy=False, states=(complete,))) < settings.sweep.trials:
        trial, params = ask(study, settings)
        print(f"trial {trial.number} of {study.study_name}: {json.dumps(params)}", flush=True)
        try:
            outcome = trials(trial.number, params)
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        if outcome.run:
            trial.set_user_attr("run", outcome.run)  # the report names it (a cloud trial's run is on the bucket)
        if outcome.pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            print(f"trial {trial.number} pruned: worse than the earlier trials at the same step", flush=True)
        elif outcome.value is not None and math.isfinite(outcome.value):
            study.tell(trial, outcome.value)
            failures = 0
            print(f"trial {trial.number}: {outcome.run} {key} {outcome.value:.4g}", flush=True)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            if outcome.code in (errors.EXIT_INTERRUPTED, errors.EXIT_TERMINATED):
                raise KeyboardInterrupt if outcome.code == errors.EXIT_INTERRUPTED else errors.Terminated()
            how = f"exit code {outcome.code}, its error above" if outcome.code else f"{outcome.run}: no finite {key}"
            print(f"trial {trial.number} failed ({how})", flush=True)
            failures += 1
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise UserError(f"{failures} trials of {study.study_name} failed in a row (the last: {how}): fix that, "
                                "then run the same command to go on")  # fmt: skip


class Pruning:
    """In a trial's training process (main): each evaluation goes to the study, and the pruner judges the trial."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        import optuna

        self.journal, self.watch = Path(environ[STORAGE_ENV]), environ[WATCH_ENV]
        study = optuna.load_study(study_name=environ[STUDY_ENV], storage=storage(self.journal))
        number = int(environ[TRIAL_ENV])
        [frozen] = [trial for trial in study.get_trials(deepcopy=False) if trial.number == number]
        self.trial = optuna.trial.Trial(study, frozen._trial_id)
        self.number = number

    def judge(self, metrics: Mapping[str, float], step: int) -> bool:
        """Report this evaluation (main process); True when the pruner stops the trial."""
        value = metrics.get(self.watch)
        if value is None or not math.isfinite(value):
            return False
        self.trial.report(float(value), step)
        if self.trial.should_prune():
            (self.journal.parent / f"{PRUNED_PREFIX}{self.number}").touch()
            return True
        return False
