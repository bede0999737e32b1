"""The chat task's own settings, without a model: the LoRA section and the server's generation limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator

import pytest

from src.config import SettingsError, load_settings


def test_the_defaults_fine_tune_lora_adapters_on_a_chat_dataset() -> None:
    settings = load_settings(environ={})
    assert settings.data.dataset == "trl-lib/Capybara"
    assert settings.data.messages_column == "messages"
    assert settings.lora.target_modules == "all-linear"
    assert settings.serving.default_max_tokens <= settings.serving.max_tokens


@pytest.mark.parametrize(
    ("variable", "text", "problem"),
    [
        ("LORA__R", "0", r"lora\.r: "),
        ("LORA__DROPOUT", "1", r"lora\.dropout: "),
        ("LORA__TARGET_MODULES", "[]", r"lora\.target_modules"),
        ("LORA__TARGET_MODULES", "[q_proj, 'v proj']", r"lora\.target_modules"),
        ("LORA__TARGET_MODULES", "everything", r"lora\.target_modules"),
        ("SERVING__PRECISION", "int8", r"serving\.precision"),
        ("SERVING__DEFAULT_MAX_TOKENS", "100000", r"serving: default_max_tokens \(100000\) exceeds max_tokens"),
        ("SERVING__MAX_SEQUENCES", "0", r"serving\.max_sequences"),
        ("SERVING__CACHE_TOKENS", "lots", r"serving\.cache_tokens"),
        ("SERVING__MAX_QUEUED", "-1", r"serving\.max_queued"),
    ],
)
def test_generation_settings_are_checked(variable: str, text: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=problem) as error:
        load_settings(environ={variable: text})
    if "." in problem:
        assert variable in str(error.value), "the variable to change is named"


def test_the_engine_limits_default_to_the_device() -> None:
    serving = load_settings(environ={}).serving
    assert (serving.sequences(gpu=False), serving.cache(gpu=False)) == (32, 16384)
    assert (serving.sequences(gpu=True), serving.cache(gpu=True)) == (128, 65536)
    chosen = load_settings(environ={"SERVING__MAX_SEQUENCES": "3", "SERVING__CACHE_TOKENS": "999"}).serving
    assert (chosen.sequences(gpu=True), chosen.cache(gpu=False)) == (3, 999)


def test_a_stream_that_fails_after_its_first_chunk_ends_with_an_error_event_and_done() -> None:
    """The official client raises on an error event; without [DONE] after it, it would return what it had."""
    from src.task.api import Answer

    async def rest() -> AsyncGenerator[dict[str, object], None]:
        yield {"text": " world"}
        yield {"error": "generation failed: RuntimeError: out of memory", "status": 500}

    async def events() -> list[str]:
        return [event async for event in Answer("chatcmpl-1", "local").events({"text": "Hello"}, rest(), True)]

    sent = asyncio.run(events())
    assert [json.loads(event[6:])["choices"][0]["delta"] for event in sent[:3]] == [
        {"role": "assistant", "content": ""}, {"content": "Hello"}, {"content": " world"}]  # fmt: skip
    assert json.loads(sent[3][6:])["error"]["message"].startswith("generation failed")
    assert sent[4:] == ["data: [DONE]\n\n"]
