"""The code's shape: no import cycles between modules or packages, no core module importing the task,
one name per module, a README line for every module (read from the source, no imports)."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from src.config import PROJECT_ROOT

SRC = PROJECT_ROOT / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in SRC.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """The project modules `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "src"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "src":
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return found


def package(module: str) -> str:
    """src.models.train_model -> src.models; a top-level module is its own package."""
    return ".".join(module.split(".")[:2])


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle in `graph`, or [] when there is none (depth-first search)."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        for target in sorted(graph.get(node, ())):
            found = visit(target, [*path, node])
            if found:
                return found
        done.add(node)
        return []

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return []


GRAPH = {module: imports(path) - {module} for module, path in MODULES.items()}


def test_no_module_import_cycle() -> None:
    assert cycle(GRAPH) == []


def test_no_package_import_cycle() -> None:
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        packages.setdefault(package(module), set()).update(package(target) for target in targets)
    assert cycle({name: targets - {name} for name, targets in packages.items()}) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


# The task: src/task/ and this project's settings model. The core is the rest, but for src/__main__.py,
# the one place that hands the task to the core's commands.
TASK_MODULES = {module for module in MODULES if module == "src.config" or module.split(".")[:2] == ["src", "task"]}
MEETING_POINT = "src.__main__"


def task_imports(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """The core modules of `graph` that import a task module, and what they import of it."""
    core = set(graph) - TASK_MODULES - {MEETING_POINT}
    found = {module: sorted(graph[module] & TASK_MODULES) for module in sorted(core)}
    return {module: targets for module, targets in found.items() if targets}


def test_no_core_module_imports_the_task() -> None:
    assert TASK_MODULES, "the task is where the layout says"
    assert task_imports(GRAPH) == {}


def test_the_task_import_check_finds_one() -> None:
    broken = {**GRAPH, "src.runs": {*GRAPH["src.runs"], "src.task"}}
    assert task_imports(broken) == {"src.runs": ["src.task"]}


def test_each_module_name_is_used_once() -> None:
    names = Counter(path.name for path in SRC.rglob("*.py") if path.name != "__init__.py")
    assert [name for name, count in names.items() if count > 1] == []


def test_the_readme_layout_names_every_module() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") :]
    missing = [
        str(path.relative_to(PROJECT_ROOT))
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "__init__.py" and str(path.relative_to(PROJECT_ROOT)) not in layout
    ]
    assert missing == []
