"""The sweep section, checked like every other (src/sweep_settings.py), and what a trial is handed."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import pytest

from src import runs
from src.config import SettingsError, load_settings
from src.errors import UserError
from src.models import sweep
from src.task import TASK


@pytest.mark.parametrize(
    ("space", "problem"),
    [
        ({"training.learnin_rate": {"low": 1e-5, "high": 1e-3}}, "'training.learnin_rate' is not a field of training"),
        ({"trainer.learning_rate": {"low": 1e-5, "high": 1e-3}}, "'trainer.learning_rate' names no section"),
        ({"training": {"low": 1, "high": 2}}, "'training' is not a field of training"),
        ({"training.warmup_fraction": {"low": 0.2, "high": 0.1}}, r"low \(0.2\) must be below high"),
        ({"training.warmup_fraction": {"low": 0, "high": 0.1, "log": True}}, "a log range needs low above 0"),
        ({"training.warmup_fraction": {"choices": []}}, "choices is empty"),
        ({"training.warmup_fraction": {"choices": [0.1], "low": 0.0}}, "low and high, or choices, not both"),
        ({"training.warmup_fraction": {"high": 0.1}}, "give low and high"),
        ({"training.warmup_fraction": {"low": 0.0, "high": 0.1, "mean": 1}}, "mean"),
        ({"training.warmup_fraction": {"low": 0.01, "high": 0.1, "log": True, "step": 0.01}}, "log or step, not both"),
        ({"training.eval_steps": {"low": 2, "high": 8, "step": 0.5}}, r"takes whole numbers \(step 0.5 is not one\)"),
        ({"training.max_steps": {"low": 1.5, "high": 8}}, r"takes whole numbers \(low 1.5 is not one\)"),
    ],
    ids=["misspelled-field", "no-such-section", "a-section", "low-above-high", "log-from-zero", "no-choices",
         "range-and-choices", "half-a-range", "unknown-key", "log-and-step", "half-steps-of-a-whole-number",
         "a-whole-number-from-a-fraction"],
)  # fmt: skip
def test_a_search_space_that_names_no_field_or_no_values_is_refused(space: dict[str, object], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        load_settings(environ={}, overrides={"sweep": {"space": space}})


def test_the_shipped_search_space_is_valid_and_every_value_is_taken() -> None:
    settings = load_settings(environ={})
    assert settings.sweep.space, "settings.yaml ships a search space"
    sweep.check_values(settings, TASK, [])  # each low, high and choice is a value its field accepts


def test_a_value_its_field_refuses_is_named_before_any_trial() -> None:
    settings = load_settings(environ={}, overrides={"sweep": {"space": {"training.warmup_fraction": {
        "low": 0.1, "high": 7.0}}}})  # fmt: skip
    with pytest.raises(UserError, match=r"sweep\.space training\.warmup_fraction: 7\.0 is not a value it takes"):
        sweep.check_values(settings, TASK, [])


def test_an_empty_space_and_an_unknown_metric_are_refused() -> None:
    shipped = load_settings(environ={})
    settings = shipped.model_copy(update={"sweep": shipped.sweep.model_copy(update={"space": {}})})
    with pytest.raises(UserError, match=r"sweep\.space is empty"):
        sweep.check_values(settings, TASK, [])
    with pytest.raises(UserError, match=r"sweep\.metric 'bleu': not a metric"):
        sweep.metric_of(load_settings(environ={}, overrides={"sweep": {"metric": "bleu"}}), TASK)


def test_the_metric_is_the_tasks_first_and_pruning_watches_its_training_log() -> None:
    key, maximize, watch = sweep.metric_of(load_settings(environ={}), TASK)
    first = TASK.metrics[0]
    assert (key, maximize) == (first.key, first.higher_is_better)
    assert watch.startswith("eval_")


def test_a_trial_gets_its_parameters_as_settings_variables(tmp_path: Path) -> None:
    params = {"training.learning_rate": 0.0003, "training.num_train_epochs": 2, "project.name": "x y"}
    env = sweep.trial_env("study-a", 3, params, tmp_path / "journal.log", "eval_accuracy")
    assert env["TRAINING__LEARNING_RATE"] == "0.0003"
    assert env["TRAINING__NUM_TRAIN_EPOCHS"] == "2"
    assert env["PROJECT__NAME"] == "x y"
    assert env["TRAINING__RUN_NAME"] == "study-a-t3"
    assert json.loads(env[sweep.PARAMS_ENV]) == params
    assert (env[sweep.STUDY_ENV], env[sweep.TRIAL_ENV]) == ("study-a", "3")


def test_a_cloud_trial_is_the_training_task_with_its_values_and_job_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """sweep-cloud's job: the task file's job, the trial's variables and the local overrides as envs (the task
    file's own envs kept), the chosen cloud, and recovery after errors; the journal is not handed to the cloud."""
    from src.cloud import sweep_cloud

    monkeypatch.setenv("TRAINING__MAX_STEPS", "7")
    settings = load_settings(flags={"cloud.infra": ("--infra", "azure"), "cloud.gpus": ("--gpus", "A100:1")})
    base = {"name": "x", "resources": {"infra": "gcp", "accelerators": "T4:1"}, "envs": {"OWN": "1"}, "run": "true"}
    config = sweep_cloud.job_config(base, settings, "lr", 4, {"training.learning_rate": 0.001}, dict(os.environ))
    assert config["name"] == "sweep-lr-t4"
    assert config["resources"]["infra"] == "azure"
    assert config["resources"]["accelerators"] == "A100:1"
    assert config["resources"]["job_recovery"] == {"max_restarts_on_errors": sweep_cloud.JOB_RESTARTS}
    envs = config["envs"]
    assert (envs["OWN"], envs["TRAINING__MAX_STEPS"], envs["TRAINING__LEARNING_RATE"]) == ("1", "7", "0.001")
    assert (envs["TRAINING__RUN_NAME"], envs[sweep.STUDY_ENV], envs[sweep.TRIAL_ENV]) == ("lr-t4", "lr", "4")
    assert sweep.STORAGE_ENV not in envs
    assert "PATH" not in envs, "only settings travel, not this machine's environment"
    assert base["resources"] == {"infra": "gcp", "accelerators": "T4:1"}, "the task file's job is not changed"


def test_a_cloud_trials_metric_is_its_own_last_result_line() -> None:
    from src.cloud import sweep_cloud

    def line(study: str, trial: int, accuracy: float) -> str:
        result = {"study": study, "trial": trial, "metrics": {"run_id": "r", "accuracy": accuracy}}
        return sweep.RESULT_PREFIX + json.dumps(result) + "\n"

    log = ["(task) step 1\n", line("lr", 3, 0.5), line("other", 4, 0.9), line("lr", 4, 0.6), line("lr", 4, 0.7),
           "(task) " + sweep.RESULT_PREFIX + "{not json\n"]  # fmt: skip
    assert sweep_cloud.read_result(log, "lr", 4) == {"run_id": "r", "accuracy": 0.7}
    skypilot = ["(sweep-lr-t4, pid=1504) " + line("lr", 4, 0.8), "(sweep-lr-t4, pid=1504) done\n"]  # a job's log
    assert sweep_cloud.read_result(log + skypilot, "lr", 4) == {"run_id": "r", "accuracy": 0.8}
    assert sweep_cloud.read_result(log, "lr", 5) is None
    assert sweep_cloud.read_result(["Job failed\n"], "lr", 4) is None


def test_a_search_space_given_by_variable_replaces_the_files_whole() -> None:
    """A setting is one value: SWEEP__SPACE names the whole space, not keys to add to the file's."""
    settings = load_settings(environ={"SWEEP__SPACE": "{training.warmup_fraction: {low: 0.0, high: 0.2}}"})
    assert list(settings.sweep.space) == ["training.warmup_fraction"]
    assert load_settings(environ={"SWEEP__SPACE": "{}"}).sweep.space == {}
    with pytest.raises(SettingsError, match=r"'training.learnin_rate' is not a field .*  \[override: SWEEP__SPACE\]$"):
        load_settings(environ={"SWEEP__SPACE": "{training.learnin_rate: {low: 1, high: 2}}"})


def in_memory_study(settings: Any, maximize: bool = True) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(**sweep.study_options(settings, maximize))


def test_a_whole_number_field_that_defaults_to_null_gets_whole_numbers() -> None:
    """data.max_train_samples is `int | None`, here null: its type, not its value, says whole numbers."""
    space = {"data.max_train_samples": {"low": 100, "high": 1000}}
    settings = load_settings(environ={}, overrides={"data": {"max_train_samples": None}, "sweep": {"space": space}})
    assert settings.data.max_train_samples is None
    study = in_memory_study(settings)
    for _ in range(5):
        trial, params = sweep.ask(study, settings)
        assert isinstance(params["data.max_train_samples"], int), params
        study.tell(trial, 0.5)


def test_a_study_name_too_long_to_name_its_trials_runs_is_refused() -> None:
    assert sweep.study_name(load_settings(environ={}, overrides={"sweep": {"study": "s" * 53}})) == "s" * 53
    with pytest.raises(UserError, match="at most 53"):
        sweep.study_name(load_settings(environ={}, overrides={"sweep": {"study": "s" * 54}}))
    with pytest.raises(UserError, match=r"give a shorter --study"):  # the default: <training.run_name>-sweep
        sweep.study_name(load_settings(environ={}, overrides={"training": {"run_name": "r" * 50}}))


def test_a_study_made_for_another_metric_is_refused(tmp_path: Path) -> None:
    settings = load_settings(environ={"TRAINING__OUTPUT_DIR": str(tmp_path)})
    with sweep.open_study(settings, "s", "accuracy", maximize=True) as study:
        study.tell(study.ask(), 0.5)
    refusals = {("f1", True): "made to maximize accuracy, not to maximize f1",
                ("accuracy", False): "made to maximize accuracy, not to minimize accuracy"}  # fmt: skip
    for (key, maximize), says in refusals.items():
        with pytest.raises(UserError, match=says), sweep.open_study(settings, "s", key, maximize):
            pass
    with sweep.open_study(settings, "s", "accuracy", maximize=True) as study:  # as made: it goes on
        assert len(study.trials) == 1


def test_trials_that_end_without_a_finite_metric_count_as_failures() -> None:
    """A diverging search (every run's metric NaN) stops after MAX_FAILURES_IN_A_ROW, not never."""
    settings = load_settings(environ={})
    calls = []

    def diverging(number: int, params: Any) -> sweep.Outcome:
        calls.append(number)
        assert len(calls) <= 10, "the driver did not stop"
        return sweep.Outcome(float("nan"), run=f"run-{number}", code=0)

    study = in_memory_study(settings)
    with pytest.raises(UserError, match=r"3 trials of .* failed in a row \(the last: run-2: no finite accuracy\)"):
        sweep.drive(study, settings, diverging, "accuracy")
    assert len(calls) == sweep.MAX_FAILURES_IN_A_ROW


def test_trials_a_killed_driver_left_running_are_settled_when_it_runs_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trial that published its run (the driver killed before telling the study) counts with its metric; one
    cut short is marked failed and its checkpoints and half-done publish go; one still training is left alone."""
    settings = load_settings(environ={"TRAINING__OUTPUT_DIR": str(tmp_path)})
    with sweep.open_study(settings, "s", "accuracy", maximize=True) as study:
        for _ in range(3):
            study.ask()
    published = tmp_path / "s-t0-20261208-100000"
    published.mkdir()
    runs.write_json(published / runs.METRICS, {"accuracy": 0.75})
    runs.write_json(published / runs.RUN_INFO, {"sweep": {"study": "s", "trial": 0}})
    for number in (1, 2):
        folder = runs.checkpoint_dir(tmp_path, f"s-t{number}-20261208-10000{number}")
        (folder / "checkpoint-4").mkdir(parents=True)
        runs.write_json(folder / runs.RUN_INFO, {runs.TRIAL_OF: "s"})
        (tmp_path / f"{runs.TEMP_PREFIX}{folder.name}-abcd1234").mkdir()
    training = runs.checkpoint_dir(tmp_path, "s-t2-20261208-100002")
    with (tmp_path / runs.CHECKPOINTS / f"{training.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what the process that trains it holds
        with sweep.open_study(settings, "s", "accuracy", maximize=True) as study:
            assert sweep.cut_short(study, tmp_path) == [1, 2]
            assert [(trial.state.name, trial.value) for trial in study.trials] == [
                ("COMPLETE", 0.75), ("FAIL", None), ("FAIL", None)]  # fmt: skip
    said = capsys.readouterr().out
    assert "trial 0 of s had finished (s-t0-20261208-100000) when the driver stopped: kept" in said
    assert "trial 1 of s was cut short by an earlier stop: it is run again anew" in said
    assert not runs.checkpoint_dir(tmp_path, "s-t1-20261208-100001").exists()
    assert not list(tmp_path.glob(f"{runs.TEMP_PREFIX}s-t1-*"))
    assert (training / "checkpoint-4").is_dir(), "a trial still training keeps its checkpoints"
    assert list(tmp_path.glob(f"{runs.TEMP_PREFIX}s-t2-*"))
    assert published.is_dir()
