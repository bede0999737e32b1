"""Training on the tiny offline model: publishing, resuming, damaged checkpoints, and the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import EvalPrediction

from src import runs
from src.config import PROJECT_ROOT, load_settings
from src.deployment.classifier import Classifier
from src.models.train_model import compute_metrics, train
from tests.conftest import clean_env, free_port, only_error_line, run_module
from tests.integration.conftest import make_settings


class PreemptedError(Exception):
    """Stands in for a Ctrl-C or a spot preemption right after a checkpoint."""


class StopAtCheckpoint(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            raise PreemptedError(f"stopped at step {state.global_step}")


def interrupted_run(smoke_assets: dict[str, Path], output_dir: Path, stop_at: int, **training: Any) -> str:
    """Train until the checkpoint at `stop_at`, then fail as a preemption would; return the run id."""
    settings = make_settings(smoke_assets, output_dir, **training)
    with pytest.raises(PreemptedError, match=f"step {stop_at}"):
        train(settings, callbacks=[StopAtCheckpoint(stop_at)])
    return runs.unfinished_runs(output_dir)[-1].name


def test_compute_metrics() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    labels = np.array([0, 1, 0, 0])
    metrics = compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert metrics["count"] == 4


def test_smoke_run_publishes_a_loadable_model(trained_model: Path) -> None:
    files = {path.name for path in trained_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json", "settings.yaml", "run.json"} <= files
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.6, "the smoke task is learnable: near-chance accuracy means a broken pipeline"
    assert metrics["world_size"] == 1
    assert metrics["eval_samples"] == 200, "evaluated on the whole split"
    info = runs.read_info(trained_model)
    assert info["run_id"] == trained_model.name
    assert info["max_length"] == 128
    assert runs.resolve_model_dir(trained_model.parent / "latest") == trained_model.resolve()
    assert not (trained_model.parent / runs.CHECKPOINTS).exists(), "a finished run keeps no checkpoints"

    predictions = Classifier(trained_model).predict(["great wonderful superb film", "awful boring dull mess"])
    assert [prediction.label for prediction in predictions] == ["pos", "neg"]


def test_interrupted_run_resumes_and_never_moves_latest(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    good = train(make_settings(smoke_assets, tmp_path, run_name="good", max_steps=3, save_steps=100))["run_id"]
    run_id = interrupted_run(smoke_assets, tmp_path, 5, run_name="resumable", max_steps=12, save_steps=5)
    assert (tmp_path / "latest").resolve() == (tmp_path / good).resolve()
    assert not (tmp_path / run_id).exists(), "no half model where the server looks"

    half_written = runs.checkpoint_dir(tmp_path, run_id) / "checkpoint-9"  # killed while saving
    half_written.mkdir()
    (half_written / "model.safetensors").write_bytes(b"truncated")

    settings = make_settings(smoke_assets, tmp_path, run_name="resumable", max_steps=12, save_steps=5)
    metrics = train(settings, resume=run_id)
    assert metrics["resumed_from_step"] == 5
    assert metrics["global_step"] == 12
    assert (tmp_path / "latest").resolve() == (tmp_path / run_id).resolve()
    assert (tmp_path / good).is_dir(), "older runs stay"
    assert not list(tmp_path.glob(".tmp-*")), "no staging folder left behind"


def truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(100)


CORRUPTIONS: dict[str, Callable[[Path], object]] = {
    "truncated-weights": lambda checkpoint: truncate(checkpoint / "model.safetensors"),
    "garbage-weights": lambda checkpoint: (checkpoint / "model.safetensors").write_bytes(os.urandom(4096)),
    "bad-json": lambda checkpoint: (checkpoint / "trainer_state.json").write_text("{not json"),
    "bad-optimizer": lambda checkpoint: (checkpoint / "optimizer.pt").write_bytes(b"\0" * 64),
    "bad-rng-state": lambda checkpoint: truncate(next(checkpoint.glob("rng_state*.pth"))),
    "missing-scheduler": lambda checkpoint: (checkpoint / "scheduler.pt").unlink(),
    "missing-config": lambda checkpoint: (checkpoint / "config.json").unlink(),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(
    smoke_assets: dict[str, Path], tmp_path: Path, corrupt: Callable[[Path], object]
) -> None:
    overrides = {"run_name": "damaged", "max_steps": 14, "save_steps": 5, "save_total_limit": 3}
    run_id = interrupted_run(smoke_assets, tmp_path, 10, **overrides)
    corrupt(runs.checkpoint_dir(tmp_path, run_id) / "checkpoint-10")

    metrics = train(make_settings(smoke_assets, tmp_path, **overrides), resume=run_id)
    assert metrics["resumed_from_step"] == 5
    assert metrics["global_step"] == 14
    assert (tmp_path / "latest").resolve() == (tmp_path / run_id).resolve()


def test_two_runs_leave_two_folders_and_latest_on_the_second(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    first = train(make_settings(smoke_assets, tmp_path, max_steps=2))["run_id"]
    second = train(make_settings(smoke_assets, tmp_path, max_steps=2))["run_id"]
    assert first != second
    assert [path.name for path in runs.finished_runs(tmp_path)] == [second, first]
    assert (tmp_path / "latest").resolve() == (tmp_path / second).resolve()


def test_a_run_being_trained_cannot_be_resumed_twice(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    run_id = interrupted_run(smoke_assets, tmp_path, 5, max_steps=12, save_steps=5)
    with runs.run_lock(tmp_path, run_id), pytest.raises(runs.RunLockedError, match="another process"):
        train(make_settings(smoke_assets, tmp_path, max_steps=12, save_steps=5), resume=run_id)


def test_label_column_names_what_the_data_has(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    from src.models.data import DataError

    settings = make_settings(smoke_assets, tmp_path)
    broken = settings.model_copy(update={"data": settings.data.model_copy(update={"label_column": "sentiment"})})
    with pytest.raises(DataError, match=r"'sentiment'.*\['label', 'text'\]|\['text', 'label'\]"):
        train(broken)


# The command line, as `uv run train-local` runs it (one process each unless stated).


def train_local(tmp_path: Path, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    return run_module("src.models.launch", "--smoke", *args, env=clean_env(TRAINING__OUTPUT_DIR=str(tmp_path), **env),
                      timeout=timeout)  # fmt: skip


def printed_metrics(stdout: str) -> dict[str, Any]:
    """The metrics JSON the command prints last (the Trainer's progress logs come before it)."""
    metrics: dict[str, Any] = json.loads(stdout[stdout.rindex('{\n  "run_id"') :])
    return metrics


def published(output_dir: Path) -> list[dict[str, Any]]:
    return [json.loads((path / "metrics.json").read_text()) for path in runs.finished_runs(output_dir)]


@pytest.mark.slow
def test_train_local_smoke(tmp_path: Path) -> None:
    result = train_local(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "defaults were used" not in result.stderr
    [metrics] = published(tmp_path)
    assert (tmp_path / "latest").resolve() == (tmp_path / metrics["run_id"]).resolve()
    assert printed_metrics(result.stdout)["run_id"] == metrics["run_id"]


@pytest.mark.slow
def test_reserved_run_name_exits_2_and_touches_nothing(tmp_path: Path) -> None:
    result = train_local(tmp_path, TRAINING__RUN_NAME="latest")
    assert result.returncode == 2
    assert "training.run_name" in only_error_line(result.stderr)
    assert not (tmp_path / "latest").exists()


@pytest.mark.slow
def test_bad_override_exits_2_with_one_line(tmp_path: Path) -> None:
    result = train_local(tmp_path, TRAINING__MAX_STEPS="abc")
    assert result.returncode == 2
    assert "TRAINING__MAX_STEPS" in only_error_line(result.stderr)


@pytest.mark.slow
def test_error_inside_the_training_process_is_one_line(tmp_path: Path) -> None:
    result = train_local(tmp_path, DATA__LABEL_COLUMN="sentiment")
    assert result.returncode == 2
    assert "sentiment" in only_error_line(result.stderr)


def start_training(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "src.models.launch", "--smoke", *args], cwd=PROJECT_ROOT,
        env=clean_env(TRAINING__OUTPUT_DIR=str(tmp_path), **env), start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_checkpoints(
    output_dir: Path, process: subprocess.Popen[str], count: int = 1, timeout: float = 240
) -> list[Path]:
    """Complete checkpoints of the running training, oldest first, once there are `count`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [path.parent for path in output_dir.glob(".checkpoints/*/checkpoint-*/trainer_state.json")]
        if len(found) >= count:
            return sorted(found, key=lambda path: int(path.name.split("-")[-1]))
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.1)
    raise AssertionError(f"not {count} checkpoint(s) within the timeout")


LONG_RUN = {"TRAINING__MAX_STEPS": "600", "TRAINING__SAVE_STEPS": "10", "TRAINING__SAVE_TOTAL_LIMIT": "3"}


@pytest.mark.slow
def test_ctrl_c_exits_130_without_a_traceback(tmp_path: Path) -> None:
    process = start_training(tmp_path, **LONG_RUN)
    wait_for_checkpoints(tmp_path, process)
    os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert not (tmp_path / "latest").exists()


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_process_with_143(tmp_path: Path) -> None:
    process = start_training(tmp_path, **LONG_RUN)
    wait_for_checkpoints(tmp_path, process)
    process.send_signal(signal.SIGTERM)  # a scheduler stopping the job: the launcher alone gets it
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    with pytest.raises(ProcessLookupError):  # no training process outlives the launcher
        os.killpg(process.pid, 0)


@pytest.mark.slow
def test_kill_then_truncated_weights_then_resume_finishes(tmp_path: Path) -> None:
    process = start_training(tmp_path, **LONG_RUN)
    wait_for_checkpoints(tmp_path, process, count=2)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    *_, kept, newest = wait_for_checkpoints(tmp_path, process, count=2)
    truncate(newest / "model.safetensors")

    end = str(int(newest.name.split("-")[-1]) + 10)
    result = train_local(tmp_path, "--resume", TRAINING__MAX_STEPS=end, TRAINING__SAVE_STEPS="10")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{newest.name} is damaged" in result.stderr, "the user is told which checkpoint was set aside"
    [metrics] = published(tmp_path)
    assert metrics["resumed_from_step"] == int(kept.name.split("-")[-1])
    assert metrics["global_step"] == int(end)


@pytest.mark.slow
def test_two_processes_share_the_data_and_publish_once(tmp_path: Path) -> None:
    result = train_local(tmp_path, "--num-processes", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    [metrics] = published(tmp_path)
    settings = load_settings(environ={}, overlays=[PROJECT_ROOT / "configs" / "smoke.yaml"])
    batch = settings.training.per_device_train_batch_size
    steps_per_epoch = -(-600 // (2 * batch))  # each process sees half of the 600 reviews per step
    assert metrics["world_size"] == 2
    assert metrics["effective_batch_size"] == 2 * batch
    assert metrics["global_step"] == steps_per_epoch * int(settings.training.num_train_epochs)
    assert metrics["eval_samples"] == 200, "metrics cover the whole evaluation split, not one shard"
    assert result.stdout.count('"run_id"') == 1, "one process prints the metrics"
    assert result.stderr.count("Saved ") == 1, "one process publishes and logs it"
    predictions = Classifier(tmp_path / "latest").predict(["great wonderful superb film", "awful boring dull mess"])
    assert [prediction.label for prediction in predictions] == ["pos", "neg"]


@pytest.mark.slow
def test_two_nodes_over_loopback_finish_one_run(tmp_path: Path) -> None:
    nodes = {"SKYPILOT_NUM_NODES": "2", "SKYPILOT_NODE_IPS": "127.0.0.1\n127.0.0.1\n",
             "SKYPILOT_NUM_GPUS_PER_NODE": "1", "TRAINING__DISTRIBUTED_PORT": str(free_port())}  # fmt: skip
    head = start_training(tmp_path, SKYPILOT_NODE_RANK="0", **nodes)
    worker = start_training(tmp_path, SKYPILOT_NODE_RANK="1", **nodes)
    head_out, head_err = head.communicate(timeout=300)
    _, worker_err = worker.communicate(timeout=300)
    assert head.returncode == 0, head_err[-3000:]
    assert worker.returncode == 0, worker_err[-3000:]
    [metrics] = published(tmp_path)
    assert metrics["world_size"] == 2
    assert metrics["num_machines"] == 2
    assert printed_metrics(head_out)["run_id"] == metrics["run_id"]


@pytest.mark.slow
def test_two_processes_resume_after_a_kill(tmp_path: Path) -> None:
    process = start_training(tmp_path, "--num-processes", "2", **LONG_RUN)
    wait_for_checkpoints(tmp_path, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    *_, newest = wait_for_checkpoints(tmp_path, process)
    end = str(int(newest.name.split("-")[-1]) + 10)
    result = train_local(tmp_path, "--resume", "--num-processes", "2", TRAINING__MAX_STEPS=end,
                         TRAINING__SAVE_STEPS="10")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [metrics] = published(tmp_path)
    assert metrics["world_size"] == 2
    assert metrics["resumed_from_step"] == int(newest.name.split("-")[-1])
    assert metrics["global_step"] == int(end)


@pytest.mark.slow
def test_unreachable_hub_fails_fast_and_points_to_smoke(tmp_path: Path) -> None:
    # An endpoint on a closed local port: the same failure as no internet, but instant.
    env = clean_env(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(tmp_path / "hub-cache"))
    result = run_module("src.models.launch", env=env, timeout=20)  # a hang guard: Hub retries take a minute
    assert result.returncode == 2
    assert "accelerate" not in result.stderr, "it stopped before launching the training"
    assert "--smoke" in result.stderr
    assert load_settings(environ={}).model.checkpoint in only_error_line(result.stderr)
