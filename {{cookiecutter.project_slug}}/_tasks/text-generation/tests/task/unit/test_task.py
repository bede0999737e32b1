"""The chat task's own settings, without a model: the LoRA section and the server's generation limits."""

from __future__ import annotations

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
    ],
)
def test_generation_settings_are_checked(variable: str, text: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=problem) as error:
        load_settings(environ={variable: text})
    if "." in problem:
        assert variable in str(error.value), "the variable to change is named"
