"""The run folder format: names, the `latest` pointer, locks; which model folder a command uses (no model needed)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from src import model_folder, runs
from src.errors import UserError
from src.model_folder import ModelNotFoundError
from src.task import TASK

FILES = TASK.model_files


def resolve(path: Path) -> Path:
    return model_folder.resolve(path, FILES)


STARTED = datetime(2026, 12, 2, 15, 30, 0, tzinfo=UTC)


def fake_run(output_dir: Path, run_id: str, finished_at: str) -> Path:
    run_dir = output_dir / run_id
    run_dir.mkdir(parents=True)
    (run_dir / FILES.config).write_text("{}")
    runs.write_json(run_dir / runs.METRICS, {"accuracy": 0.5})
    runs.write_json(run_dir / runs.RUN_INFO, {"run_id": run_id, "finished_at": finished_at})
    return run_dir


def test_run_ids_are_sortable_and_stable_on_skypilot() -> None:
    assert runs.run_id_for("smoke", STARTED, {}) == "smoke-20261202-153000"
    task = {"SKYPILOT_TASK_ID": "sky-managed-2026-12-02-15-30-00-123456_my-job_1"}
    assert runs.run_id_for("bert", STARTED, task) == runs.run_id_for("bert", datetime.now(UTC), task)


def test_reserving_the_same_id_twice_gives_two_runs(tmp_path: Path) -> None:
    first = runs.reserve_run_id(tmp_path, "smoke-20261202-153000")
    second = runs.reserve_run_id(tmp_path, "smoke-20261202-153000")
    assert (first, second) == ("smoke-20261202-153000", "smoke-20261202-153000-2")


def test_publish_moves_latest_and_keeps_older_runs(tmp_path: Path) -> None:
    for run_id in ("a-1", "a-2"):
        staging = runs.new_staging_dir(tmp_path, run_id)
        (staging / FILES.config).write_text("{}")
        runs.write_json(staging / runs.METRICS, {})
        runs.publish(staging, tmp_path, run_id)
    assert resolve(tmp_path / runs.LATEST) == (tmp_path / "a-2").resolve()
    assert (tmp_path / "a-1" / FILES.config).is_file()
    assert not list(tmp_path.glob(".tmp-*"))


def test_finished_runs_newest_first(tmp_path: Path) -> None:
    fake_run(tmp_path, "old", "2026-12-01T10:00:00+00:00")
    fake_run(tmp_path, "new", "2026-12-02T10:00:00+00:00")
    (tmp_path / ".checkpoints" / "unfinished").mkdir(parents=True)
    assert [path.name for path in runs.finished_runs(tmp_path)] == ["new", "old"]
    assert [path.name for path in runs.unfinished_runs(tmp_path)] == ["unfinished"]


def test_a_plain_resume_leaves_a_sweeps_trial_cut_short_alone(tmp_path: Path) -> None:
    """A trial's checkpoints hold the trial's hyperparameters: `--resume` alone continues the user's own run
    (the sweep runs a cut trial again), `--resume <id>` whatever is named."""

    def unfinished(run_id: str, started_at: str, **info: str) -> None:
        folder = runs.checkpoint_dir(tmp_path, run_id)
        folder.mkdir(parents=True)
        runs.write_json(folder / runs.RUN_INFO, {"run_id": run_id, "started_at": started_at, **info})

    unfinished("mine-20261201-100000", "2026-12-01T10:00:00+00:00")
    unfinished("study-t1-20261202-100000", "2026-12-02T10:00:00+00:00", **{runs.TRIAL_OF: "study"})
    assert runs.resume_target(tmp_path, "") == "mine-20261201-100000"
    assert runs.resume_target(tmp_path, "study-t1-20261202-100000") == "study-t1-20261202-100000"
    shutil.rmtree(runs.checkpoint_dir(tmp_path, "mine-20261201-100000"))
    with pytest.raises(UserError, match=r"no unfinished run .* \(1 cut-short sweep trial\(s\)"):
        runs.resume_target(tmp_path, "")


def test_latest_as_a_text_file_where_symlinks_are_missing(tmp_path: Path) -> None:
    run_dir = fake_run(tmp_path, "run-1", "")
    (tmp_path / runs.LATEST).write_text("run-1\n")
    assert resolve(tmp_path / runs.LATEST) == run_dir.resolve()


def test_resolve_refuses_a_file_and_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve(tmp_path / "weights.bin")
    with pytest.raises(ModelNotFoundError, match="uv run train-local"):
        resolve(tmp_path)


@pytest.mark.parametrize("pointer", ["missing", "dangling", "emptied"])
def test_latest_that_leads_nowhere_resolves_to_the_newest_finished_run(tmp_path: Path, pointer: str) -> None:
    """serve, predict, evaluate and serve-cloud find a model the one same way, whatever became of `latest`."""
    fake_run(tmp_path, "old", "2026-12-01T10:00:00+00:00")
    newest = fake_run(tmp_path, "new", "2026-12-02T10:00:00+00:00")
    if pointer == "dangling":
        runs.point_latest(tmp_path, "deleted-run")
    elif pointer == "emptied":
        (tmp_path / "emptied").mkdir()
        runs.point_latest(tmp_path, "emptied")
    assert resolve(tmp_path / runs.LATEST) == newest.resolve()
    assert model_folder.find_run(tmp_path, None, FILES) == newest.resolve()
    with pytest.raises(ModelNotFoundError, match="no trained model"):
        resolve(tmp_path / "nothing" / runs.LATEST)


def test_a_second_process_cannot_take_a_run_that_is_training(tmp_path: Path) -> None:
    with runs.run_lock(tmp_path, "smoke-1"), pytest.raises(runs.RunLockedError, match="smoke-1"):  # noqa: SIM117
        with runs.run_lock(tmp_path, "smoke-1"):
            pass
    with runs.run_lock(tmp_path, "smoke-1"):
        pass  # released: free again
