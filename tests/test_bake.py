"""Cheap structural checks of a generated project, for every cloud."""

from __future__ import annotations

import json
import py_compile
import re
import subprocess
import tomllib
from collections.abc import Callable

import pytest
import yaml

from tests.conftest import CLOUDS, TASKS, TEMPLATE, Baked

LAYOUT = [
    ".github/workflows/ci.yaml",
    "configs/settings.yaml",
    "models",
    "notebooks",
    "src/__init__.py",
    "src/config.py",
    "src/deployment/serve.py",
    "src/models/train_model.py",
    "tests",
    ".gitignore",
    "sky_task.yaml",
    "pyproject.toml",
    "README.md",
]
# The commands the README promises; every taskipy task must also be a console script.
COMMANDS = {"lint", "format", "test", "train-local", "train-cloud", "serve", "serve-cloud", "evaluate", "predict"}
COMMANDS |= {"compare"}


@pytest.fixture(params=[(task, cloud) for task in TASKS for cloud in CLOUDS], ids=lambda pair: "-".join(pair))
def project(request: pytest.FixtureRequest, baker: Callable[..., Baked]) -> Baked:
    task, cloud = request.param
    return baker(task=task, default_cloud=cloud, project_name="Sentiment Lab")


def test_layout(project: Baked) -> None:
    missing = [item for item in LAYOUT if not (project.path / item).exists()]
    assert not missing
    assert project.path.name == "sentiment-lab"
    assert not (project.path / "_tasks").exists(), "the task folders are gone once applied"


# Each task's own files: a project carries only its task's code (the hook removes the other's).
TASK_FILES = {
    "text-classification": ["src/task/classifier.py", "src/task/onnx_export.py", "src/task/parity.py"],
    "text-generation": ["src/task/generator.py", "src/task/completion.py"],
}


@pytest.mark.parametrize("task", TASKS)
def test_a_project_carries_its_task_only(baker: Callable[..., Baked], task: str) -> None:
    project = baker(task=task)
    (other,) = set(TASKS) - {task}
    assert all((project.path / name).is_file() for name in TASK_FILES[task])
    assert not any((project.path / name).exists() for name in TASK_FILES[other])
    pyproject = tomllib.loads((project.path / "pyproject.toml").read_text())
    dependencies = " ".join(pyproject["project"]["dependencies"])
    assert ("trl" in dependencies) == (task == "text-generation")
    assert ("onnxruntime" in dependencies) == (task == "text-classification")
    settings = yaml.safe_load((project.path / "configs/settings.yaml").read_text())
    expected = {"text-classification": "distilbert-base-uncased", "text-generation": "Qwen/Qwen2.5-0.5B-Instruct"}
    assert settings["model"]["checkpoint"] == expected[task], "the default model follows the task"
    assert ("lora" in settings) == (task == "text-generation")
    core = [path for path in (project.path / "src").rglob("*.py")
            if "task" not in path.relative_to(project.path / "src").parts and path.name != "config.py"]  # fmt: skip
    assert core, "the core is there"
    assert not [path for path in core if any(name in path.read_text() for name in TASKS)], "no branch on the task"


# What one task's code must not mention in the other task's project (its names, its files, its libraries).
FOREIGN = {
    "text-classification": re.compile(r"peft|lora|adapter", re.IGNORECASE),
    "text-generation": re.compile(r"onnx|confusion", re.IGNORECASE),
}


@pytest.mark.parametrize("task", TASKS)
def test_a_projects_code_names_nothing_of_the_other_task(baker: Callable[..., Baked], task: str) -> None:
    project = baker(task=task)
    found = {
        f"{path.relative_to(project.path)}:{number}": line.strip()
        for path in sorted((project.path / "src").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if FOREIGN[task].search(line)
    }
    assert found == {}


def test_nothing_left_unrendered(project: Baked) -> None:
    for path in project.files():
        text = path.read_text(encoding="utf-8", errors="replace")
        text = re.sub(r"\$\{\{.*?\}\}", "", text)  # GitHub Actions expressions are meant to stay
        if path.suffix != ".py":  # Python is copied unrendered: `{{` there is an f-string's brace
            assert "{{" not in text, path
            assert "{%" not in text, path
        assert "cookiecutter" not in text.replace("modern-ml-cookiecutter", ""), path


def test_structured_files_parse(project: Baked) -> None:
    parsed = 0
    for path in project.files():
        if path.suffix in {".yaml", ".yml"}:
            yaml.safe_load(path.read_text())
        elif path.suffix == ".toml":
            tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            continue
        parsed += 1
    assert parsed >= 4


def test_python_compiles(project: Baked) -> None:
    sources = [path for path in project.files() if path.suffix == ".py"]
    assert len(sources) >= 10
    for path in sources:
        py_compile.compile(str(path), doraise=True)


def test_workflow_expressions_survive(project: Baked) -> None:
    workflow = yaml.safe_load((project.path / ".github/workflows/ci.yaml").read_text())
    text = (project.path / ".github/workflows/ci.yaml").read_text()
    assert "${{ github.workflow }}-${{ github.ref }}" in text
    assert workflow[True] == {"push": None, "pull_request": None}  # YAML 1.1 reads `on` as True
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    steps = " ".join(str(step) for step in workflow["jobs"]["lint-and-test"]["steps"])
    for needed in ("astral-sh/setup-uv", "uv sync --locked", "uv run lint", "uv run test"):
        assert needed in steps


def test_cloud_choice_reaches_every_file(project: Baked) -> None:
    cloud = yaml.safe_load((project.path / "configs/settings.yaml").read_text())["cloud"]["infra"]
    assert cloud in CLOUDS
    task = yaml.safe_load((project.path / "sky_task.yaml").read_text())
    assert task["resources"]["infra"] == cloud
    assert task["resources"]["accelerators"], "GPU choices for the cloud"
    pyproject = tomllib.loads((project.path / "pyproject.toml").read_text())
    assert any(item.startswith(f"skypilot[{cloud}]") for item in pyproject["dependency-groups"]["cloud"])


def test_every_task_is_a_console_script(project: Baked) -> None:
    pyproject = tomllib.loads((project.path / "pyproject.toml").read_text())
    tasks = set(pyproject["tool"]["taskipy"]["tasks"])
    assert tasks >= COMMANDS, f"missing tasks: {COMMANDS - tasks}"
    assert pyproject["project"]["scripts"] == dict.fromkeys(tasks, "src.console:main")


def test_answers_become_metadata(baker: Callable[..., Baked]) -> None:
    project = baker(project_name='Tom\'s "Quoted" Project', author_name="Zoë O'Hara", model_checkpoint="org/some-model")
    pyproject = tomllib.loads((project.path / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "tom-s-quoted-project"
    assert pyproject["project"]["authors"] == [{"name": "Zoë O'Hara"}]
    settings = yaml.safe_load((project.path / "configs/settings.yaml").read_text())
    assert settings["project"]["name"] == 'Tom\'s "Quoted" Project'
    assert settings["model"]["checkpoint"] == "org/some-model"
    assert settings["training"]["run_name"] == "some-model-imdb"


def test_first_commit_made(project: Baked) -> None:
    log = subprocess.run(["git", "log", "--oneline"], cwd=project.path, capture_output=True, text=True, check=True)
    assert "Initial commit" in log.stdout
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project.path, capture_output=True, text=True)
    assert status.stdout == "", "everything generated is committed"


def test_models_and_notebooks_kept_in_git(project: Baked) -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=project.path, capture_output=True, text=True, check=True)
    assert "models/.gitkeep" in tracked.stdout
    assert "notebooks/.gitkeep" in tracked.stdout
    assert "notebooks/starter.ipynb" in tracked.stdout, "every task has a starter notebook"


def test_a_long_checkpoint_id_still_gives_a_valid_run_name(baker: Callable[..., Baked]) -> None:
    project = baker(model_checkpoint="org/" + "a" * 96)
    run_name = yaml.safe_load((project.path / "configs" / "settings.yaml").read_text())["training"]["run_name"]
    # The settings model's rule for training.run_name (src/config.py: RunName).
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,59}", run_name), run_name


def test_pants_sees_every_command_module() -> None:
    """`python -m src COMMAND` imports the command's module by name, which Pants' inference cannot see:
    src/BUILD names each one, or a test that runs the command fails only under Pants (`No module named`)."""
    import ast

    core = TEMPLATE / "{{cookiecutter.project_slug}}" / "src"
    tree = ast.parse((core / "__main__.py").read_text(encoding="utf-8"))
    [commands] = [node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                  and any(getattr(target, "id", "") == "COMMANDS" for target in node.targets)]  # fmt: skip
    assert isinstance(commands, ast.Dict)
    modules = {ast.literal_eval(value) for value in commands.values}
    build = (core / "BUILD").read_text(encoding="utf-8")
    missing = [module for module in sorted(modules) if module.replace(".", "/") + ".py" not in build]
    assert not missing, f"add them to src/BUILD's __main__.py dependencies: {missing}"
