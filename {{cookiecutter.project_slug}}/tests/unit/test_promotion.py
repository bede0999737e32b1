"""The promotion gate's arithmetic, and the model card a run folder carries (read back by huggingface_hub)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from src import model_card, promotion
from src.config import load_settings
from src.errors import UserError
from src.task import TASK


def gate(candidate: float, incumbent: float | None, higher: bool, **promotion_settings: float) -> str | None:
    settings = load_settings(environ={}, overrides={"promotion": promotion_settings})
    return promotion.gate(candidate, incumbent, higher, settings)


@pytest.mark.parametrize(
    ("candidate", "incumbent", "higher", "settings", "passes"),
    [
        (0.80, 0.80, True, {}, True),
        (0.79, 0.80, True, {}, False),
        (0.79, 0.80, True, {"max_regression": 0.02}, True),
        (0.85, None, True, {}, True),
        (0.50, None, True, {"min_value": 0.6}, False),
        (2.5, 2.4, False, {}, False),
        (2.3, 2.4, False, {}, True),
        (2.3, None, False, {"min_value": 2.0}, False),
        (math.nan, None, True, {}, False),
    ],
    ids=["equal", "worse", "within-allowance", "first", "under-floor", "higher-perplexity", "lower-perplexity",
         "over-ceiling", "nan"],
)  # fmt: skip
def test_the_gate(candidate: float, incumbent: float | None, higher: bool, settings: dict[str, float],
                  passes: bool) -> None:  # fmt: skip
    assert (gate(candidate, incumbent, higher, **settings) is None) == passes


def test_a_promotion_metric_the_task_has_not_is_one_line() -> None:
    settings = load_settings(environ={}, overrides={"promotion": {"metric": "bleu"}})
    with pytest.raises(UserError, match=r"promotion\.metric 'bleu'"):
        promotion.metric_of(settings, TASK)


def test_the_model_card_is_read_by_huggingface_hub_with_the_runs_metrics(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    settings = load_settings(environ={})
    metrics = {metric.key: 0.5 + index / 10 for index, metric in enumerate(TASK.metrics)}
    (tmp_path / "curves.png").write_bytes(b"\x89PNG")
    path = model_card.write(tmp_path, settings, {**metrics, "global_step": 3}, TASK.name, TASK.metrics, "run-1")
    card = ModelCard.load(path)
    assert card.data.license == settings.project.license
    assert card.data.pipeline_tag == TASK.name
    assert card.data.base_model == settings.model.checkpoint
    assert {result.metric_type: result.metric_value for result in card.data.eval_results} == metrics
    assert "![curves](curves.png)" in card.text


@pytest.mark.parametrize(
    ("argv", "problem"),
    [(["--force", " "], "--force needs a REASON"), (["--rollback", "--force", "x"], "--rollback takes no RUN"),
     (["../elsewhere"], "RUN")],
    ids=["empty-reason", "rollback-and-force", "a-path"],
)  # fmt: skip
def test_bad_promote_flags_are_one_line_before_anything_is_read(argv: list[str], problem: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("TRAINING__OUTPUT_DIR", str(tmp_path / "models"))
    with pytest.raises(UserError, match=problem):
        promotion.main([*argv], TASK)
    assert not (tmp_path / "models").exists(), "nothing written"
