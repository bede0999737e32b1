"""A first quick run after a plain `uv sync` compiles the dependencies on the idle core (tests/helpers/bytecode.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from src.settings import PROJECT_ROOT
from tests.helpers.bytecode import HELPER_FIRST, HELPER_LAST, compile_ahead, runtime_packages


def test_the_helper_compiles_the_projects_dependencies_and_theirs() -> None:
    packages = runtime_packages(PROJECT_ROOT / "pyproject.toml")
    assert (packages[0], packages[-1]) == (HELPER_FIRST, HELPER_LAST), "apart from what collection compiles"
    assert {"pydantic", "yaml", "sympy"} <= set(packages), "declared ones, by import name, and torch's own"
    assert not {"_pytest", "hypothesis", "mypy"} & set(packages), "the dev tools are not the project's dependencies"


def test_the_helper_compiles_a_package_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "freshly_synced"
    (package / "tests").mkdir(parents=True)
    for source in (package / "__init__.py", package / "model.py", package / "tests" / "test_model.py"):
        source.write_text("ANSWER = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    helper = compile_ahead(tmp_path, lambda: ["freshly_synced"], first=("freshly_synced",))
    assert helper is not None, "nothing compiled yet: the helper starts"
    assert helper.wait(timeout=60) == 0
    compiled = {path.name for path in package.rglob("*.pyc")}
    assert compiled == {f"__init__.{sys.implementation.cache_tag}.pyc", f"model.{sys.implementation.cache_tag}.pyc"}
    assert compile_ahead(tmp_path, lambda: ["freshly_synced"], first=("freshly_synced",)) is None, "compiled: no helper"
