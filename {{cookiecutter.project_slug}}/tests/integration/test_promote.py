"""The promotion gate on real runs, in this process: runs evaluated on different data are both scored anew on
the candidate's evaluation file; runs that cannot be compared are promoted by --force alone, the reason logged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from src import promotion, runs
from src.config import load_settings
from src.errors import UserError
from src.evaluation import evaluate
from src.task import TASK


def with_data(run: Path, **data: object) -> None:
    """Say the run was trained with other data settings (what a run on another split records)."""
    stored = yaml.safe_load((run / runs.RUN_SETTINGS).read_text(encoding="utf-8"))
    stored["data"].update(data)
    (run / runs.RUN_SETTINGS).write_text(yaml.safe_dump(stored), encoding="utf-8")


def test_runs_evaluated_on_different_data_are_both_scored_on_the_candidates_file(run_copy: Path) -> None:
    output_dir = run_copy.parent
    incumbent = output_dir / "incumbent-run"
    shutil.copytree(run_copy, incumbent, symlinks=True)
    runs.point(output_dir, runs.PRODUCTION, incumbent.name)
    with_data(incumbent, max_eval_samples=7)  # its metrics.json counts 7 texts: not comparable as they stand
    settings = load_settings(environ={"TRAINING__OUTPUT_DIR": str(output_dir)})
    key = promotion.metric_of(settings, TASK)[0]

    decision = promotion.promote(settings, TASK, run_copy.name, None)
    assert decision["action"] == "promoted", decision
    assert decision["candidate_value"] == pytest.approx(decision["incumbent_value"]), "the same weights, the same file"
    eval_file = Path(runs.stored_settings(run_copy)["data"]["eval_file"])
    for run in (run_copy, incumbent):  # each evaluated on that file, its report beside the run's
        assert (evaluate.data_target(run, eval_file) / "evaluation.json").is_file(), run.name
    logged = json.loads((output_dir / promotion.LOG).read_text().splitlines()[-1])
    assert (logged["candidate_value"], logged["metric"]) == (decision["candidate_value"], key)

    runs.point(output_dir, runs.PRODUCTION, incumbent.name)
    with_data(run_copy, eval_file=str(output_dir / "gone.jsonl"))  # nothing local to score both on
    with pytest.raises(UserError, match="promote with --force REASON"):
        promotion.promote(settings, TASK, run_copy.name, None)
    forced = promotion.promote(settings, TASK, run_copy.name, "the eval file moved")
    assert (forced["action"], forced["candidate_value"], forced["incumbent_value"]) == ("forced", None, None)
    assert runs.follow_latest(output_dir / runs.PRODUCTION).name == run_copy.name
    logged = json.loads((output_dir / promotion.LOG).read_text().splitlines()[-1])
    assert logged["reason"] == "the eval file moved"
