"""`uv run promote` through its real entry point: the gate on two real smoke runs, --force, --rollback, the
log of decisions, `train-local --promote`, and `serve` naming the promoted run on start."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from src import flags, promotion, runs
from src.models import train_local as launcher
from src.models.train_model import train
from src.task import TASK
from tests.helpers.processes import clean_env, free_port, only_error_line, run_module, start_module, stop_group


def production(output_dir: Path) -> str:
    return runs.follow_latest(output_dir / runs.PRODUCTION).name


def test_a_worse_run_is_refused_forced_and_rolled_back_and_serve_names_the_promoted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAINING__OUTPUT_DIR", str(tmp_path))
    settings = launcher.run_settings(flags.TRAIN_LOCAL.parse(["--smoke"]), TASK, build_smoke_assets=True)
    good = str(train(settings, TASK)["run_id"])  # the whole smoke run, in this process
    env = clean_env(TRAINING__OUTPUT_DIR=str(tmp_path))
    key = TASK.metrics[0].key

    first = run_module("src", "promote", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout)["action"] == "promoted", "nothing promoted yet: the gate is the floor alone"
    assert production(tmp_path) == good
    assert (tmp_path / good / "README.md").is_file(), "every run has its model card"

    worse = run_module("src", "train-local", "--smoke", "--promote", env={**env, "TRAINING__MAX_STEPS": "1"})
    assert worse.returncode == promotion.EXIT_GATE_FAILED, worse.stderr[-3000:]
    bad = runs.follow_latest(tmp_path / runs.LATEST).name
    assert bad != good
    assert production(tmp_path) == good, "train-local --promote: the gate failed, production stays"

    refused = run_module("src", "promote", env=env)
    assert refused.returncode == promotion.EXIT_GATE_FAILED
    line = only_error_line(refused.stderr)
    metrics = [json.loads((tmp_path / run / runs.METRICS).read_text())[key] for run in (bad, good)]
    assert all(f"{value:.4g}" in line for value in metrics), "the line names both numbers"
    assert production(tmp_path) == good

    forced = run_module("src", "promote", bad, "--force", "see how it answers", env=env)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert production(tmp_path) == bad
    back = run_module("src", "promote", "--rollback", env=env)
    assert back.returncode == 0, back.stderr[-3000:]
    assert production(tmp_path) == good

    log = [json.loads(line) for line in (tmp_path / promotion.LOG).read_text().splitlines()]
    assert [entry["action"] for entry in log] == ["promoted", "refused", "refused", "forced", "rolled back"]
    assert log[3]["reason"] == "see how it answers"
    assert all(entry["by"] for entry in log)

    from huggingface_hub import ModelCard

    for run in (good, bad):  # every run folder's model card, with that run's metrics in its metadata
        card = ModelCard.load(tmp_path / run / "README.md")
        recorded = json.loads((tmp_path / run / runs.METRICS).read_text())
        assert {result.metric_type: result.metric_value for result in card.data.eval_results}[key] == recorded[key]

    unknown = run_module("src", "promote", "no-such-run", env=env)
    assert unknown.returncode == 2
    assert "no-such-run" in only_error_line(unknown.stderr)

    served = {**env, "SERVING__MODEL_DIR": str(tmp_path / runs.PRODUCTION)}  # settings.yaml's, in this runs folder
    serve = start_module("src", "serve", "--port", str(free_port()), env=served, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)  # fmt: skip
    try:
        assert serve.stdout is not None
        started = next(line for line in serve.stdout if line.startswith("Serving run "))
    finally:
        stop_group(serve, grace=10)
    assert started.startswith(f"Serving run {good}, the promoted run"), started
