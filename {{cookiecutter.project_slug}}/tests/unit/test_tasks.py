"""The console scripts' hand-over to taskipy (src/tasks.py): where the bytecode cache goes."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.tasks import cache_bytecode_in_venv


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param({"PYTHONDONTWRITEBYTECODE": "1"}, {"PYTHONPYCACHEPREFIX": "/p/.venv/pycache"}, id="to-the-venv"),
        pytest.param(
            {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/mine"},
            {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/mine"},
            id="own-prefix-wins",
        ),
        pytest.param({}, {}, id="default-python-caching-untouched"),
    ],
)
def test_bytecode_is_cached_once_even_when_writing_it_is_switched_off(
    before: dict[str, str], after: dict[str, str]
) -> None:
    env = {"PATH": "/usr/bin", **before}
    cache_bytecode_in_venv(env, Path("/p/.venv"))
    assert env == {"PATH": "/usr/bin", **after}
