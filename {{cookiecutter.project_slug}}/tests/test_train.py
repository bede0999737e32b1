from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import EvalPrediction

from src.config import PROJECT_ROOT, load_settings
from src.deployment.classifier import Classifier
from src.models.artifacts import resolve_model_dir
from src.models.launch import command
from src.models.train_model import CHECKPOINTS, compute_metrics, train
from tests.conftest import make_settings


class PreemptedError(Exception):
    """Stands in for a Ctrl-C or a spot preemption right after a checkpoint."""


class StopAfterFirstCheckpoint(TrainerCallback):
    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        raise PreemptedError(f"stopped at step {state.global_step}")


def test_compute_metrics() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    labels = np.array([0, 1, 0, 0])
    metrics = compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_launch_command_sets_every_accelerate_flag() -> None:
    argv = command(["--smoke"])
    for flag in ("--num_processes", "--num_machines", "--mixed_precision", "--dynamo_backend"):
        assert flag in argv, f"{flag} missing: accelerate would warn about defaults"
    threads = int(argv[argv.index("--num_cpu_threads_per_process") + 1])
    assert threads >= 1
    assert argv[-3:] == ["-m", "src.models.train_model", "--smoke"], "arguments pass through"


def test_smoke_run_publishes_a_loadable_model(trained_model: Path) -> None:
    files = {path.name for path in trained_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json", "settings.yaml"} <= files
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["accuracy"] > 0.6, "the smoke task is learnable: near-chance accuracy means a broken pipeline"
    assert resolve_model_dir(trained_model.parent / "latest") == trained_model.resolve()
    assert not (trained_model.parent / CHECKPOINTS).exists(), "a finished run keeps no checkpoints"

    classifier = Classifier(trained_model)
    predictions = classifier.predict(["great wonderful superb film", "awful boring dull mess"])
    assert [prediction.label for prediction in predictions] == ["pos", "neg"]
    assert all(0.0 <= prediction.score <= 1.0 for prediction in predictions)


def test_interrupted_run_resumes_and_never_moves_latest(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    train(make_settings(smoke_assets, tmp_path, run_name="good", max_steps=3, save_steps=100))
    settings = make_settings(smoke_assets, tmp_path, run_name="resumable", max_steps=12, save_steps=5)

    with pytest.raises(PreemptedError, match="step 5"):
        train(settings, callbacks=[StopAfterFirstCheckpoint()])
    assert (tmp_path / "latest").resolve() == (tmp_path / "good").resolve()
    assert not (tmp_path / "resumable").exists(), "no half model where the server looks"
    assert (tmp_path / CHECKPOINTS / "resumable" / "checkpoint-5").is_dir()

    half_written = tmp_path / CHECKPOINTS / "resumable" / "checkpoint-9"  # killed while saving
    half_written.mkdir()
    (half_written / "model.safetensors").write_bytes(b"truncated")

    metrics = train(settings)
    assert metrics["resumed_from_step"] == 5
    assert metrics["global_step"] == 12
    assert (tmp_path / "latest").resolve() == (tmp_path / "resumable").resolve()
    assert not list(tmp_path.glob(".tmp-*")), "no staging folder left behind"


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if "__" not in key}
    return {**env, **extra}


@pytest.mark.slow
def test_train_local_smoke_subprocess(tmp_path: Path) -> None:
    env = clean_env(TRAINING__OUTPUT_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "src.models.launch", "--smoke"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "defaults were used" not in result.stderr
    metrics = json.loads((tmp_path / "smoke" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert (tmp_path / "latest").resolve() == (tmp_path / "smoke").resolve()


@pytest.mark.slow
def test_unreachable_hub_fails_fast_and_points_to_smoke(tmp_path: Path) -> None:
    # An endpoint on a closed local port: the same failure as no internet, but instant.
    env = clean_env(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(tmp_path / "hub-cache"))
    # The timeout is a hang guard; Hub retries would take most of a minute.
    result = subprocess.run(
        [sys.executable, "-m", "src.models.launch"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "accelerate" not in result.stderr, "it stopped before launching the training"
    assert "--smoke" in result.stderr
    assert load_settings(environ={}).model.checkpoint in result.stderr
    assert "Traceback" not in result.stderr
