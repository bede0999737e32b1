"""`train-local` across the process boundary: the launcher, the training process (accelerate launch for
several), signals, kill -9, 2 processes, 2 nodes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from src import flags, runs, smoke_assets
from src.config import PROJECT_ROOT, load_settings
from src.evaluation import evaluate, predict, report
from src.models import train_local as launcher
from src.models.train_model import train
from src.task import TASK
from tests.helpers.files import truncate
from tests.helpers.models import WEIGHTS, launcher_assets_dir, smoke_file_settings, with_smoke_assets
from tests.helpers.processes import (
    call,
    clean_env,
    free_port,
    only_error_line,
    processes_with,
    run_module,
    start_module,
    started,
    wait_until_none_with,
)
from tests.task import samples

LONG_RUN = {"TRAINING__MAX_STEPS": "600", "TRAINING__SAVE_STEPS": "10", "TRAINING__SAVE_TOTAL_LIMIT": "3"}


def train_local(
    output_dir: Path, *args: str, timeout: float = 300, fresh: bool = False, python: Sequence[str] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    """`train-local --smoke` into output_dir; `fresh`: it builds the smoke assets itself, as on a first run."""
    if not fresh:
        with_smoke_assets(output_dir)
    return run_module("src", "train-local", "--smoke", *args, python=python,
                      env=clean_env(TRAINING__OUTPUT_DIR=str(output_dir), **env), timeout=timeout)  # fmt: skip


def imported_at_start(stderr: str) -> set[str]:
    """The modules `python -X importtime` reports: the launcher's own (its children start without the option)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def start_training(output_dir: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    with_smoke_assets(output_dir)
    env = clean_env(TRAINING__OUTPUT_DIR=str(output_dir), **env)
    return start_module("src", "train-local", "--smoke", *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def printed_metrics(stdout: str) -> dict[str, Any]:
    """The metrics JSON the command prints last (the Trainer's progress logs come before it)."""
    metrics: dict[str, Any] = json.loads(stdout[stdout.rindex('{\n  "run_id"') :])
    return metrics


def published(output_dir: Path) -> list[dict[str, Any]]:
    return [json.loads((path / "metrics.json").read_text()) for path in runs.finished_runs(output_dir)]


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


def rows(output_dir: Path, split: str) -> int:
    """How many examples the smoke run under output_dir trained or evaluated on."""
    return len(smoke_assets.files(launcher_assets_dir(output_dir))[split].read_text(encoding="utf-8").splitlines())


def step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[-1])


def test_train_local_smoke_then_evaluate(tmp_path: Path) -> None:
    trained = train_local(tmp_path, fresh=True, python=["-X", "importtime"])
    assert trained.returncode == 0, trained.stderr[-3000:]
    launcher = imported_at_start(trained.stderr)
    assert "src.models.supervisor" in launcher, "python -X importtime reports the launcher's imports"
    assert not {"torch", "transformers"} & launcher, "the training process builds the smoke set: one import of torch"
    assert smoke_assets.files(launcher_assets_dir(tmp_path))["model"].is_dir()
    assert "defaults were used" not in trained.stderr, "every accelerate flag is explicit"
    [metrics] = published(tmp_path)
    assert (tmp_path / "latest").resolve() == (tmp_path / metrics["run_id"]).resolve()
    assert printed_metrics(trained.stdout)["run_id"] == metrics["run_id"]
    run_dir = tmp_path / metrics["run_id"]
    assert (run_dir / report.REPORT).is_file()
    assert len(list(run_dir.glob("*.png"))) >= 2
    evaluated = run_module("src", "evaluate", env=clean_env(TRAINING__OUTPUT_DIR=str(tmp_path)))  # the latest
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    headline = TASK.metrics[0].key
    assert json.loads(evaluated.stdout)[headline] == pytest.approx(metrics[headline], rel=1e-3)


def test_a_smoke_run_with_another_seed_leaves_earlier_runs_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each seed's smoke model and data live apart (models/.smoke/seed-N): a second smoke run with another
    seed leaves the first run's predictions and its evaluation exactly as they were. The runs are trained as
    a training process sets them up (the smoke set built for the seed), in this process."""
    monkeypatch.setenv("TRAINING__OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("TRAINING__MAX_STEPS", "6")

    def smoke_run() -> str:
        settings = launcher.run_settings(flags.TRAIN_LOCAL.parse(["--smoke"]), TASK, build_smoke_assets=True)
        return str(train(settings, TASK)["run_id"])

    first = smoke_run()
    source = samples.write_rows(tmp_path / "rows.jsonl", 4)

    def answers() -> tuple[str, dict[str, Any]]:
        output = tmp_path / "answers.jsonl"
        assert call(predict.main, str(source), "-o", str(output), "--force", "--model-dir", str(tmp_path / first)) == 0
        capsys.readouterr()
        assert call(evaluate.main, first) == 0
        return output.read_text(), json.loads(capsys.readouterr().out)

    before = answers()
    monkeypatch.setenv("TRAINING__SEED", "7")
    smoke_run()
    assert len(published(tmp_path)) == 2
    assert sorted(path.name for path in (tmp_path / ".smoke").glob("seed-*") if path.is_dir()) == ["seed-42", "seed-7"]
    assert answers() == before


def test_error_inside_the_training_process_is_one_line(tmp_path: Path) -> None:
    variable, value = samples.BAD_DATA_SETTING  # a column the data does not have
    result = run_module("src", "train-local", "--smoke", env=clean_env(**{variable: value},
                        TRAINING__OUTPUT_DIR=str(with_smoke_assets(tmp_path))))  # fmt: skip
    assert result.returncode == 2
    assert value in only_error_line(result.stderr)
    assert not runs.unfinished_runs(tmp_path), "a refused start leaves nothing for --resume to pick"


@pytest.mark.parametrize(
    ("sig", "code", "whom"),
    [(signal.SIGINT, 130, "group"), (signal.SIGTERM, 143, "launcher")],
    ids=["ctrl-c-to-the-group", "sigterm-to-the-launcher"],
)
def test_signals_stop_every_process_with_their_exit_code(tmp_path: Path, sig: int, code: int, whom: str) -> None:
    with started(start_training(tmp_path, **LONG_RUN)) as process:
        wait_for_checkpoints(tmp_path, process)
        if whom == "group":
            os.killpg(process.pid, sig)  # what the terminal does on Ctrl-C
        else:
            process.send_signal(sig)  # a scheduler stopping the job: the launcher alone gets it
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == code, stderr[-3000:]
        assert "Traceback" not in stderr
        assert not (tmp_path / "latest").exists()
        with pytest.raises(ProcessLookupError):  # no training process outlives the launcher
            os.killpg(process.pid, 0)


@pytest.mark.parametrize("entry", ["uv run train-local", "python -m src train-local"])
def test_kill_9_of_the_process_the_user_started_ends_the_whole_run(tmp_path: Path, entry: str) -> None:
    """Whichever process of the chain the user started is killed with SIGKILL (nothing can forward it),
    every process of the run ends within 10 s and `latest` does not move."""
    if entry.startswith("uv") and not shutil.which("uv"):
        pytest.skip("uv is not on PATH")
    with_smoke_assets(tmp_path)
    env = clean_env(TRAINING__OUTPUT_DIR=str(tmp_path), **LONG_RUN)
    if entry.startswith("uv"):
        command = ["uv", "run", "--no-sync", "train-local", "--smoke"]
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, start_new_session=True, text=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    else:
        process = start_module("src", "train-local", "--smoke", env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)  # fmt: skip
    with started(process):
        wait_for_checkpoints(tmp_path, process)
        chain = processes_with("TRAINING__OUTPUT_DIR", str(tmp_path))
        commands = b"\n".join(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in chain)
        assert b"-m src train-local --smoke" in commands, "the launcher runs"
        assert b"-m src train-process --smoke" in commands, "the training process runs"
        process.kill()  # this process alone
        process.communicate()
        assert not wait_until_none_with("TRAINING__OUTPUT_DIR", str(tmp_path), 10), "every process of the run ended"
    assert not (tmp_path / "latest").exists()
    assert not runs.finished_runs(tmp_path)


def test_a_training_process_killed_alone_ends_the_run_in_one_line(tmp_path: Path) -> None:
    """kill -9 of the training process only (as the kernel's OOM killer does): the launcher says so in one
    line, with how to go on, and exits 137; `latest` does not move."""
    with started(start_training(tmp_path, **LONG_RUN)) as process:
        wait_for_checkpoints(tmp_path, process)
        [training] = [pid for pid in processes_with("TRAINING__OUTPUT_DIR", str(tmp_path))
                      if b"train-process" in Path(f"/proc/{pid}/cmdline").read_bytes()]  # fmt: skip
        os.kill(training, signal.SIGKILL)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGKILL
    line = only_error_line(stderr)
    assert "killed by SIGKILL" in line
    assert "--resume" in line
    assert not (tmp_path / "latest").exists()


def test_two_processes_share_the_data_and_publish_once(tmp_path: Path) -> None:
    """Both processes start without the smoke set: one builds it under its lock, the other waits and reads it."""
    result = train_local(tmp_path, "--num-processes", "2", fresh=True)
    assert result.returncode == 0, result.stderr[-3000:]
    [metrics] = published(tmp_path)
    training = smoke_file_settings().training
    batch = training.per_device_train_batch_size
    steps_per_epoch = -(-rows(tmp_path, "train") // (2 * batch))  # each process sees half of the reviews per step
    assert metrics["world_size"] == 2
    assert metrics["effective_batch_size"] == 2 * batch
    assert metrics["global_step"] == steps_per_epoch * int(training.num_train_epochs)
    assert metrics["eval_samples"] == rows(tmp_path, "eval"), "metrics cover the whole evaluation split, not one shard"
    assert result.stdout.count('"run_id"') == 1, "one process prints the metrics"
    assert result.stderr.count("Saved ") == 1, "one process publishes and logs it"
    eval_file = smoke_assets.files(launcher_assets_dir(tmp_path))["eval"]
    samples.check_two_process_run(tmp_path / "latest", eval_file, metrics)  # it learned; the loss is averaged


def test_two_nodes_over_loopback_finish_one_run(tmp_path: Path) -> None:
    # The two nodes meet, train in step and publish once: a few steps show it.
    nodes = {"SKYPILOT_NUM_NODES": "2", "SKYPILOT_NODE_IPS": "127.0.0.1\n127.0.0.1\n",
             "SKYPILOT_NUM_GPUS_PER_NODE": "1", "TRAINING__DISTRIBUTED_PORT": str(free_port()),
             "TRAINING__MAX_STEPS": "20"}  # fmt: skip
    with (
        started(start_training(tmp_path, SKYPILOT_NODE_RANK="0", **nodes)) as head,
        started(start_training(tmp_path, SKYPILOT_NODE_RANK="1", **nodes)) as worker,
    ):
        head_out, head_err = head.communicate(timeout=300)
        _, worker_err = worker.communicate(timeout=300)
    assert head.returncode == 0, head_err[-3000:]
    assert worker.returncode == 0, worker_err[-3000:]
    [metrics] = published(tmp_path)
    assert metrics["world_size"] == 2
    assert metrics["num_machines"] == 2
    assert printed_metrics(head_out)["run_id"] == metrics["run_id"]


def test_a_node_whose_peers_never_come_gives_up_in_one_line(tmp_path: Path) -> None:
    alone: dict[str, Any] = {
        "SKYPILOT_NUM_NODES": "2", "SKYPILOT_NODE_RANK": "0", "SKYPILOT_NODE_IPS": "127.0.0.1\n127.0.0.2\n",
        "TRAINING__DISTRIBUTED_PORT": str(free_port()), "TRAINING__RENDEZVOUS_TIMEOUT": "5",
    }  # fmt: skip
    started_at = time.monotonic()
    result = train_local(tmp_path, timeout=90, **alone)
    assert result.returncode == 2, result.stderr[-3000:]
    assert time.monotonic() - started_at < 60
    line = only_error_line(result.stderr)
    assert "did not join within 5 s (training.rendezvous_timeout)" in line
    assert "node 0 of 2" in line
    assert not wait_until_none_with("TRAINING__OUTPUT_DIR", str(tmp_path), 20), "nothing left waiting"


def test_two_processes_killed_then_truncated_weights_then_resume_finishes(tmp_path: Path) -> None:
    """kill -9 mid-run, the newest checkpoint's weights cut short, `--resume` on 2 processes: the ranks
    agree on the checkpoint before it and finish the run."""
    with started(start_training(tmp_path, "--num-processes", "2", **LONG_RUN)) as process:
        wait_for_checkpoints(tmp_path, process, count=2)
        os.killpg(process.pid, signal.SIGKILL)  # the launcher's group: the ranks run in sessions of their own
        process.communicate()
        assert not wait_until_none_with("TRAINING__OUTPUT_DIR", str(tmp_path), 30), "no rank outlives its launcher"
        *_, kept, newest = wait_for_checkpoints(tmp_path, process, count=2)
    truncate(newest / WEIGHTS)

    end = str(step(newest) + 10)
    result = train_local(tmp_path, "--resume", "--num-processes", "2", TRAINING__MAX_STEPS=end,
                         TRAINING__SAVE_STEPS="10")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{newest.name} is damaged" in result.stderr, "the user is told which checkpoint was set aside"
    [metrics] = published(tmp_path)
    assert metrics["world_size"] == 2
    assert metrics["resumed_from_step"] == step(kept)
    assert metrics["global_step"] == int(end)


def test_unreachable_hub_fails_fast_and_points_to_smoke(tmp_path: Path) -> None:
    # An endpoint on a closed local port: the same failure as no internet, but instant.
    env = clean_env(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(tmp_path / "hub-cache"))
    result = run_module("src", "train-local", env=env, timeout=20)  # a hang guard: Hub retries take a minute
    assert result.returncode == 2
    assert "accelerate" not in result.stderr, "it stopped before launching the training"
    assert "--smoke" in result.stderr
    assert load_settings(environ={}).model.checkpoint in only_error_line(result.stderr)
