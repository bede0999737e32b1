"""A chat run's `uv run evaluate` and `uv run predict` on the shared smoke run, in process: perplexity, reports,
completions, the prompts it reads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from src.evaluation import evaluate, predict, report
from tests.helpers.processes import call, only_error_line
from tests.task.samples import engine

QUESTIONS = ["What is the opposite of early?", "Opposite of hot?"]


def test_evaluate_reports_the_perplexity_training_measured(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_copy / report.REPORT).unlink()
    assert call(evaluate.main, "--model-dir", str(run_copy)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["perplexity"] == pytest.approx(math.exp(printed["eval_loss"]))
    trained = json.loads((run_copy / "metrics.json").read_text())
    assert printed["eval_loss"] == pytest.approx(trained["eval_loss"], rel=1e-3), "the same evaluation as training's"
    assert printed["eval_samples"] == trained["eval_samples"]
    text = (run_copy / report.REPORT).read_text()
    assert f"{printed['perplexity']:.4g}" in text
    assert f"![Training and evaluation curves]({report.CURVES})" in text
    assert (run_copy / report.CURVES).stat().st_size > 10_000, "a real picture"
    assert json.loads((run_copy / report.EVALUATION).read_text())["perplexity"] == printed["perplexity"]


def test_evaluate_on_a_file_writes_beside_the_run(run_copy: Path, smoke_assets: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    chats = tmp_path / "held out.jsonl"
    chats.write_text("".join(smoke_assets["eval"].read_text().splitlines(keepends=True)[:8]))
    before = (run_copy / report.REPORT).read_text()
    assert call(evaluate.main, "--model-dir", str(run_copy), "--data", str(chats)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["eval_samples"] == 8
    assert Path(printed["report"]).parent == run_copy / "eval-held-out.jsonl"
    assert (run_copy / report.REPORT).read_text() == before, "the run's own report stays"


def test_predict_writes_a_completion_per_prompt(trained_model: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": 1, "prompt": QUESTIONS[0]}, {"id": 2, "messages": [{"role": "user", "content": QUESTIONS[1]}]}]
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out.jsonl"
    assert (
        call(predict.main, str(prompts), "-o", str(out), "--model-dir", str(trained_model), "--max-tokens", "20") == 0
    )
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in written] == [1, 2], "each row keeps its own columns, in order"
    with engine(trained_model, "auto") as opened:
        for row, question in zip(written, QUESTIONS, strict=True):
            assert row["completion"] == opened.complete([{"role": "user", "content": question}], 20)[0]
        assert row["finish_reason"] == "stop"
        assert row["completion_tokens"] > 0


def test_predict_reads_plain_text_one_prompt_per_line(trained_model: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(QUESTIONS) + "\n")
    assert call(predict.main, str(prompts), "--model-dir", str(trained_model), "--max-tokens", "3") == 0
    written = [json.loads(line) for line in (tmp_path / "prompts.completions.jsonl").read_text().splitlines()]
    assert [row["text"] for row in written] == QUESTIONS
    assert all(row["completion_tokens"] <= 3 for row in written)


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (['{"prompt": "fine"}', "{not json"], "line 2"),
        (['{"prompt": "fine"}', '{"question": "where?"}'], "line 2: no 'messages' or 'prompt'"),
        (['{"messages": [{"role": "robot", "content": "hi"}]}'], "line 1: turn 0 must be"),
        (['{"messages": []}'], "line 1: 'messages' must be a non-empty list"),
        (['{"prompt": "  "}'], "line 1: the prompt is empty"),
        (['{"prompt": "hi", "completion": "x"}'], "column 'completion' would be overwritten"),
        (['{"prompt": "a\\ud800b"}'], "line 1: the prompt is not valid Unicode"),
        (
            ['{"prompt": "fine"}', '{"messages": [{"role": "user", "content": "\\udfff"}]}'],
            "line 2: turn 0 is not valid Unicode",
        ),
    ],
    ids=["not-json", "no-prompt", "bad-role", "no-turns", "blank", "clash", "lone-surrogate", "lone-surrogate-turn"],
)
def test_predict_names_the_bad_line_and_writes_nothing(
    trained_model: Path, tmp_path: Path, lines: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    assert call(predict.main, str(prompts), "-o", str(out), "--model-dir", str(trained_model)) == 2
    assert problem in only_error_line(capsys.readouterr().err)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [prompts], "no temporary file left"


def test_a_temperature_too_small_to_sample_with_is_greedy(trained_model: Path, tmp_path: Path) -> None:
    """1e-45 is inside 0..2, and dividing the scores by it gives infinities: below 1e-5 the answer is greedy."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": question}) + "\n" for question in QUESTIONS[:3]))
    answers = {}
    for temperature in ("0", "1e-45"):
        out = tmp_path / f"out-{temperature}.jsonl"
        assert call(predict.main, str(prompts), "-o", str(out), "--model-dir", str(trained_model),
                    "--temperature", temperature, "--max-tokens", "12") == 0  # fmt: skip
        answers[temperature] = [json.loads(line)["completion"] for line in out.read_text().splitlines()]
    assert answers["1e-45"] == answers["0"]
