"""LoRA training on the tiny offline model, in process: the adapters learn, the loss counts the assistant turns,
and what the chats and the base model must hold."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from src import runs
from src.evaluation import report
from src.models.train_model import TrainingError, train
from src.splits import DataError
from src.task import TASK
from src.task.smoke import END
from tests.helpers.models import smoke_settings
from tests.task.samples import engine


def test_smoke_run_publishes_adapters_that_learned(trained_model: Path, smoke_assets: dict[str, Path]) -> None:
    files = {path.name for path in trained_model.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "chat_template.jinja"} <= files
    assert "model.safetensors" not in files, "the adapters only: the base model is not copied"
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert metrics["trainable_parameters"] < metrics["total_parameters"] / 2, "LoRA: most weights stay frozen"
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert runs.read_info(trained_model)["base_model"] == str(smoke_assets["model"])

    history = report.log_history(trained_model)
    _, losses = report.series(history, "loss")
    assert losses[-1] < losses[0] / 2, f"the training loss falls: {losses}"
    _, eval_losses = report.series(history, "eval_loss")
    assert eval_losses[-1] < eval_losses[0], f"and the evaluation loss with it: {eval_losses}"

    with engine(trained_model) as opened:
        answer, last = opened.complete([{"role": "user", "content": "What is the opposite of early?"}], 20)
    assert answer.startswith("The opposite of early is"), answer
    assert last.finish_reason == "stop", "it learned to end its turn"
    assert END not in answer


def test_the_loss_counts_the_assistant_turns_only(trained_model: Path) -> None:
    """The masks TRL builds from the smoke chat template: the user's words are not trained on."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(trained_model)
    chat = [
        {"role": "user", "content": "Opposite of hot?"},
        {"role": "assistant", "content": "The opposite of hot is cold."},
    ]
    encoded: Any = tokenizer.apply_chat_template(
        chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    trained = [token for token, mask in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if mask]
    assert tokenizer.decode(trained) == "The opposite of hot is cold." + END


def test_messages_column_names_what_the_data_has(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    settings = smoke_settings(smoke_assets, tmp_path)
    broken = settings.model_copy(update={"data": settings.data.model_copy(update={"messages_column": "chat"})})
    with pytest.raises(DataError, match=r"lacks column 'chat' \(has \['messages'\]\)"):
        train(broken, TASK)


def test_malformed_conversations_are_named_before_training(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    rows = [json.loads(line) for line in smoke_assets["train"].read_text().splitlines()]
    rows[3]["messages"][-1]["role"] = "robot"
    rows[7]["messages"] = rows[7]["messages"][:-1]  # ends with the user's turn
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    settings = smoke_settings(smoke_assets, tmp_path / "runs")
    broken = settings.model_copy(update={"data": settings.data.model_copy(update={"train_file": train_file})})
    with pytest.raises(DataError, match=r"data.train_file .*train.jsonl: 2 of \d+ conversations are malformed: "
                       r"row 4: turn \d has role 'robot'.*; row 8: the last turn is not the assistant's"):  # fmt: skip
        train(broken, TASK)
    assert not list((tmp_path / "runs").glob("smoke-*")), "nothing published"
    assert not runs.unfinished_runs(tmp_path / "runs"), "no unfinished run for --resume to pick"


def test_a_conversation_too_long_to_tokenize_is_named(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    rows = [json.loads(line) for line in smoke_assets["train"].read_text().splitlines()]
    rows[5]["messages"][0]["content"] = "word " * 250_000  # 1.25 MB of text: GBs once tokenized
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    settings = smoke_settings(smoke_assets, tmp_path / "runs")
    broken = settings.model_copy(update={"data": settings.data.model_copy(update={"train_file": train_file})})
    with pytest.raises(DataError, match=r"row 6: 1,250,\d+ characters, more than 1,000,000"):
        train(broken, TASK)


def test_answers_past_max_length_are_said_and_none_left_stops(
    smoke_assets: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TRL leaves out a conversation whose assistant turn lies past model.max_length: a warning says how many;
    when that is every one, one error instead of an IndexError deep in the Trainer."""
    rows = [json.loads(line) for line in smoke_assets["train"].read_text().splitlines()]
    long_question = [{"role": "user", "content": "What is the opposite of " + "very " * 200 + "hot?"}]
    for row in rows[:10]:
        row["messages"] = long_question + row["messages"][-1:]
    some, every = tmp_path / "some.jsonl", tmp_path / "every.jsonl"
    some.write_text("".join(json.dumps(row) + "\n" for row in rows))
    every.write_text("".join(json.dumps({"messages": long_question + row["messages"][-1:]}) + "\n" for row in rows))
    settings = smoke_settings(smoke_assets, tmp_path / "runs", max_steps=1, eval_steps=None)
    with caplog.at_level(logging.WARNING):
        train(settings.model_copy(update={"data": settings.data.model_copy(update={"train_file": some})}), TASK)
    assert f"10 of {len(rows)} conversations are left out" in caplog.text
    with pytest.raises(TrainingError, match=r"train split: in none of its \d+ conversations.*raise model.max_length"):
        train(settings.model_copy(update={"data": settings.data.model_copy(update={"train_file": every})}), TASK)


def test_a_model_without_a_chat_template_is_refused(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(smoke_assets["model"], model)
    (model / "chat_template.jinja").unlink()
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    settings = smoke_settings(smoke_assets, tmp_path / "runs")
    broken = settings.model_copy(update={"model": settings.model.model_copy(update={"checkpoint": str(model)})})
    with pytest.raises(TrainingError, match="no chat template: choose an instruct or chat model"):
        train(broken, TASK)
