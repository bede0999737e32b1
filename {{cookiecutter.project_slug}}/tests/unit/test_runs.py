"""The run folder format: names, the `latest` pointer, locks (no model needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from src import runs

STARTED = datetime(2026, 12, 2, 15, 30, 0, tzinfo=UTC)


def fake_run(output_dir: Path, run_id: str, finished_at: str) -> Path:
    run_dir = output_dir / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
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
        (staging / "config.json").write_text("{}")
        runs.write_json(staging / runs.METRICS, {})
        runs.publish(staging, tmp_path, run_id)
    assert runs.resolve_model_dir(tmp_path / runs.LATEST) == (tmp_path / "a-2").resolve()
    assert (tmp_path / "a-1" / "config.json").is_file()
    assert not list(tmp_path.glob(".tmp-*"))


def test_finished_runs_newest_first(tmp_path: Path) -> None:
    fake_run(tmp_path, "old", "2026-12-01T10:00:00+00:00")
    fake_run(tmp_path, "new", "2026-12-02T10:00:00+00:00")
    (tmp_path / ".checkpoints" / "unfinished").mkdir(parents=True)
    assert [path.name for path in runs.finished_runs(tmp_path)] == ["new", "old"]
    assert [path.name for path in runs.unfinished_runs(tmp_path)] == ["unfinished"]


def test_latest_as_a_text_file_where_symlinks_are_missing(tmp_path: Path) -> None:
    run_dir = fake_run(tmp_path, "run-1", "")
    (tmp_path / runs.LATEST).write_text("run-1\n")
    assert runs.resolve_model_dir(tmp_path / runs.LATEST) == run_dir.resolve()


def test_resolve_refuses_a_file_and_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(runs.ModelNotFoundError, match="is a file"):
        runs.resolve_model_dir(tmp_path / "weights.bin")
    with pytest.raises(runs.ModelNotFoundError, match="uv run train-local"):
        runs.resolve_model_dir(tmp_path)


def test_a_second_process_cannot_take_a_run_that_is_training(tmp_path: Path) -> None:
    with runs.run_lock(tmp_path, "smoke-1"), pytest.raises(runs.RunLockedError, match="smoke-1"):  # noqa: SIM117
        with runs.run_lock(tmp_path, "smoke-1"):
            pass
    with runs.run_lock(tmp_path, "smoke-1"):
        pass  # released: free again
