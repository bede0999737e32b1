"""The chat engine in process, as the server's worker runs it: a conversation longer than the model's
positions keeps its newest tokens (over HTTP: tests/task/e2e/test_api.py)."""

from __future__ import annotations

from pathlib import Path

from tests.task.samples import engine

QUESTION = [{"role": "user", "content": "What is the opposite of early?"}]


def test_a_long_conversation_keeps_its_newest_tokens(trained_model: Path) -> None:
    history = [{"role": "user", "content": "Opposite of big? " * 200}, {"role": "assistant", "content": "Small."}]
    with engine(trained_model) as opened:
        ids, room = opened.prompt_ids([*history, *QUESTION], max_tokens=16)
        assert (len(ids), room) == (opened.positions - 16, 16), "prompt and completion fit the model's positions"
        _, room = opened.prompt_ids(QUESTION, max_tokens=opened.positions * 2)
        assert room == opened.positions - len(opened.prompt_ids(QUESTION, 1)[0]), "a short prompt leaves the rest"
        assert opened.tokenizer.decode(ids).endswith("What is the opposite of early?<|end|>\n<|assistant|>\n")
        _, last = opened.complete([*history, *QUESTION], 16)
    assert last.prompt_tokens + last.completion_tokens <= opened.positions
