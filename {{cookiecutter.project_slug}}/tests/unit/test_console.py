"""The console scripts' hand-over (src/console.py): plain tasks exec, the rest go through taskipy; bytecode is kept."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from src.config import PROJECT_ROOT
from src.console import cache_bytecode, plain_command


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


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        pytest.param("serve", [sys.executable, "-m", "src", "serve"], id="python-module-runs-in-this-interpreter"),
        pytest.param(
            "test-all", ["pytest", "-n", "auto", "--maxprocesses", "4", "--dist", "loadfile"], id="plain-command"
        ),
        pytest.param("lint", None, id="shell-syntax-goes-through-taskipy"),
        pytest.param("test", None, id="quoted-arguments-go-through-taskipy"),
        pytest.param("no-such-task", None, id="unknown-task-is-taskipys-to-report"),
    ],
)
def test_a_plain_task_replaces_the_console_script(task: str, expected: list[str] | None) -> None:
    """`uv run serve` execs `python -m src serve`: the process uv started is the command (src/lifeline.py)."""
    assert plain_command(task, PROJECT_ROOT) == expected


def test_a_task_with_a_pre_task_goes_through_taskipy(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.taskipy.tasks]\nserve = "python -m src serve"\npre_serve = "echo starting"\n'
    )
    assert plain_command("serve", tmp_path) is None
