"""The first test run after a plain `uv sync` compiles on the idle core what the tests are about to import.

`uv sync` compiles nothing (the README's set-up; `--compile-bytecode` would compile the whole venv
first), so Python compiles each module on its first import: ~3,800 of them for the quick tier
(torch, transformers, sympy, pandas, ...), ~12 s on one core. `uv run test` is one process, and the
second core is mostly idle: a helper compiles the project's dependencies there, niced, while pytest
imports torch and transformers itself (the helper's order keeps the two apart, below). Compiled files
are written atomically (py_compile), so a reader never sees half of one. Later runs find the bytecode
and start no helper; pytest stops it when the run ends (what it compiled stays).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Callable
from pathlib import Path

# Collection imports torch, then transformers: the helper starts with transformers and ends with torch, so
# the two processes seldom compile the same module at once (measured: ~5 s sooner than torch and transformers
# both last).
FIRST_IMPORTED = ("torch", "transformers")
HELPER_FIRST, HELPER_LAST = "transformers", "torch"
SKIPPED = r"[/\\](tests?|testing)[/\\]|transformers[/\\]models[/\\]"  # never imported by the project's code


def distribution(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    return re.sub(r"[-_.]+", "-", name.group(0)).lower() if name else ""


def runtime_packages(pyproject: Path) -> list[str]:
    """The import packages of the project's dependencies and of theirs: HELPER_FIRST, then the largest
    first, HELPER_LAST last."""
    wanted = [
        distribution(requirement) for requirement in tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    ]
    seen: set[str] = set()
    while wanted:
        name = wanted.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        wanted += [distribution(requirement) for requirement in requires if "extra ==" not in requirement]
    packages = {
        package
        for package, owners in importlib.metadata.packages_distributions().items()
        if any(distribution(owner) in seen for owner in owners)
    }
    site = Path(sysconfig.get_paths()["purelib"])
    folders = [package for package in packages if (site / package / "__init__.py").is_file()]

    def order(package: str) -> tuple[int, int]:
        place = {HELPER_FIRST: 0, HELPER_LAST: 2}.get(package, 1)
        return place, -sum(1 for _ in (site / package).rglob("*.py"))

    return sorted(folders, key=order)


def compiled(package: str) -> bool:
    spec = importlib.util.find_spec(package)
    return spec is None or spec.origin is None or Path(importlib.util.cache_from_source(spec.origin)).is_file()


def compile_ahead(
    site: Path, packages: Callable[[], list[str]], first: tuple[str, ...] = FIRST_IMPORTED
) -> subprocess.Popen[bytes] | None:
    """Start the helper on `packages()` (from `site`) when what collection imports first is not compiled yet;
    None when it is."""
    if all(compiled(package) for package in first):
        return None
    command = [sys.executable, "-m", "compileall", "-q", "-j", "1", "-x", SKIPPED, *packages()]
    return subprocess.Popen(
        command, cwd=site, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.nice(19),  # before pytest starts any thread of its own
    )  # fmt: skip
