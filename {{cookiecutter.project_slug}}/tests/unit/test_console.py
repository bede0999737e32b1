"""The console scripts' hand-over to taskipy (src/console.py): the bytecode cache is kept."""

from __future__ import annotations

import pytest

from src.console import cache_bytecode


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param({"PYTHONDONTWRITEBYTECODE": "1"}, {}, id="switched-off-writing-is-switched-back-on"),
        pytest.param(
            {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/mine"},
            {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/mine"},
            id="own-prefix-wins",
        ),
        pytest.param({"PYTHONPYCACHEPREFIX": "/mine"}, {"PYTHONPYCACHEPREFIX": "/mine"}, id="own-prefix-untouched"),
        pytest.param({}, {}, id="default-python-caching-untouched"),
    ],
)
def test_bytecode_is_cached_once_even_when_writing_it_is_switched_off(
    before: dict[str, str], after: dict[str, str]
) -> None:
    env = {"PATH": "/usr/bin", **before}
    cache_bytecode(env)
    assert env == {"PATH": "/usr/bin", **after}
