"""Training on the tiny offline model, in process: publishing, resuming, damaged checkpoints, locks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from src import model_folder, runs
from src.models.checkpoints import DAMAGED_PREFIX, last_checkpoint
from src.models.train_local import TRAIN_PROCESS, Layout, accelerate_flags, command, launch_env
from src.models.train_model import train
from src.task import TASK
from tests.helpers.models import CHECKPOINT_DAMAGES, CONFIG, WEIGHTS, smoke_file_settings, smoke_settings

INTERRUPTED: dict[str, Any] = {"run_name": "damaged", "max_steps": 14, "save_steps": 5, "save_total_limit": 3}
STOP_AT = 10  # the interrupted run's newest checkpoint; the one before it is at 5


class PreemptedError(Exception):
    """Stands in for a Ctrl-C or a spot preemption right after a checkpoint."""


class StopAtCheckpoint(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            raise PreemptedError(f"stopped at step {state.global_step}")


def interrupt(smoke_assets: dict[str, Path], output_dir: Path, stop_at: int, **training: Any) -> str:
    """Train until the checkpoint at `stop_at`, then fail as a preemption would; return the run id."""
    settings = smoke_settings(smoke_assets, output_dir, **training)
    with pytest.raises(PreemptedError, match=f"step {stop_at}"):
        train(settings, TASK, callbacks=[StopAtCheckpoint(stop_at)])
    return runs.unfinished_runs(output_dir)[-1].name


@pytest.fixture(scope="session")
def interrupted_runs(smoke_assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder whose one unfinished run stopped at step 10 (checkpoints at 5 and 10); copy before use."""
    output_dir = tmp_path_factory.mktemp("interrupted")
    interrupt(smoke_assets, output_dir, STOP_AT, **INTERRUPTED)
    return output_dir


@pytest.fixture
def interrupted(interrupted_runs: Path, tmp_path: Path) -> tuple[Path, str]:
    """This test's copy of the interrupted runs folder, and the run id."""
    output_dir = tmp_path / "runs"
    shutil.copytree(interrupted_runs, output_dir, symlinks=True)
    return output_dir, runs.unfinished_runs(output_dir)[-1].name


def eval_rows(smoke_assets: dict[str, Path]) -> int:
    return len(smoke_assets["eval"].read_text(encoding="utf-8").splitlines())


def test_smoke_run_publishes_a_complete_run(trained_model: Path, smoke_assets: dict[str, Path]) -> None:
    files = {path.name for path in trained_model.iterdir()}
    assert {CONFIG, WEIGHTS, "tokenizer.json", "metrics.json", "settings.yaml", "run.json", "report.md"} <= files
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert all(isinstance(metrics[metric.key], float) for metric in TASK.metrics), "the task's numbers"
    assert metrics["world_size"] == 1
    assert metrics["eval_samples"] == eval_rows(smoke_assets), "evaluated on the whole split"
    info = runs.read_info(trained_model)
    assert info["run_id"] == trained_model.name
    assert info["max_length"] == smoke_file_settings().model.max_length
    assert model_folder.resolve(trained_model.parent / "latest", TASK.model_files) == trained_model.resolve()
    assert not (trained_model.parent / runs.CHECKPOINTS).exists(), "a finished run keeps no checkpoints"
    TASK.inspect(trained_model)  # what serve, predict and evaluate check first


def test_interrupted_run_resumes_and_never_moves_latest(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    good = train(smoke_settings(smoke_assets, tmp_path, run_name="good", max_steps=3, save_steps=100), TASK)["run_id"]
    run_id = interrupt(smoke_assets, tmp_path, 5, run_name="resumable", max_steps=12, save_steps=5)
    assert (tmp_path / "latest").resolve() == (tmp_path / good).resolve()
    assert not (tmp_path / run_id).exists(), "no half model where the server looks"

    half_written = runs.checkpoint_dir(tmp_path, run_id) / "checkpoint-9"  # killed while saving
    half_written.mkdir()
    (half_written / WEIGHTS).write_bytes(b"truncated")

    settings = smoke_settings(smoke_assets, tmp_path, run_name="resumable", max_steps=12, save_steps=5)
    metrics = train(settings, TASK, resume=run_id)
    assert metrics["resumed_from_step"] == 5
    assert metrics["global_step"] == 12
    assert (tmp_path / "latest").resolve() == (tmp_path / run_id).resolve()
    assert (tmp_path / good).is_dir(), "older runs stay"
    assert not list(tmp_path.glob(".tmp-*")), "no staging folder left behind"


@pytest.mark.parametrize("damage", CHECKPOINT_DAMAGES.values(), ids=CHECKPOINT_DAMAGES.keys())
def test_damaged_newest_checkpoint_is_set_aside_for_the_previous_one(
    interrupted: tuple[Path, str], damage: Any
) -> None:
    output_dir, run_id = interrupted
    checkpoints = runs.checkpoint_dir(output_dir, run_id)
    damage(checkpoints / f"checkpoint-{STOP_AT}")
    chosen = last_checkpoint(checkpoints, TASK.model_files)
    assert chosen is not None
    assert chosen.name == "checkpoint-5"
    assert (checkpoints / f"{DAMAGED_PREFIX}checkpoint-{STOP_AT}").is_dir(), "set aside, not deleted"


def test_resume_after_damage_finishes_from_the_previous_checkpoint(
    interrupted: tuple[Path, str], smoke_assets: dict[str, Path]
) -> None:
    output_dir, run_id = interrupted
    CHECKPOINT_DAMAGES["truncated-weights"](runs.checkpoint_dir(output_dir, run_id) / f"checkpoint-{STOP_AT}")
    metrics = train(smoke_settings(smoke_assets, output_dir, **INTERRUPTED), TASK, resume=run_id)
    assert metrics["resumed_from_step"] == 5
    assert metrics["global_step"] == INTERRUPTED["max_steps"]
    assert (output_dir / "latest").resolve() == (output_dir / run_id).resolve()


def test_an_intact_checkpoint_is_resumed_from(interrupted: tuple[Path, str]) -> None:
    output_dir, run_id = interrupted
    chosen = last_checkpoint(runs.checkpoint_dir(output_dir, run_id), TASK.model_files)
    assert chosen is not None
    assert chosen.name == f"checkpoint-{STOP_AT}"


def test_two_runs_leave_two_folders_and_latest_on_the_second(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    first = train(smoke_settings(smoke_assets, tmp_path, max_steps=2), TASK)["run_id"]
    second = train(smoke_settings(smoke_assets, tmp_path, max_steps=2), TASK)["run_id"]
    assert first != second
    assert [path.name for path in runs.finished_runs(tmp_path)] == [second, first]
    assert (tmp_path / "latest").resolve() == (tmp_path / second).resolve()


def test_a_run_being_trained_cannot_be_resumed_twice(
    interrupted: tuple[Path, str], smoke_assets: dict[str, Path]
) -> None:
    output_dir, run_id = interrupted
    with runs.run_lock(output_dir, run_id), pytest.raises(runs.RunLockedError, match="another process"):
        train(smoke_settings(smoke_assets, output_dir, **INTERRUPTED), TASK, resume=run_id)


def test_a_lone_process_starts_as_accelerate_launch_would_start_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """train-local starts one training process itself: the same command line and environment that
    accelerate's own launcher makes from the flags it would have been given (accelerate is asked here)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    plan = Layout(processes_per_machine=1)
    for name in [*launch_env(plan), "KMP_AFFINITY", "KMP_BLOCKTIME"]:
        monkeypatch.delenv(name, raising=False)
    parsed = launch_command_parser().parse_args([*accelerate_flags(plan), "-m", "src", TRAIN_PROCESS, "--smoke"])
    argv, env = prepare_simple_launcher_cmd_env(_validate_launch_command(parsed)[0])
    assert argv == command(["--smoke"], plan)
    assert {name: value for name, value in env.items() if os.environ.get(name) != value} == launch_env(plan)
