"""Upkeep: pinned actions, Dependabot, pre-commit and template updates through cruft."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import E2E_HALF, TEMPLATE, Baked, bake, clean_env, work_unit

PROJECT = TEMPLATE / "{{cookiecutter.project_slug}}"
WORKFLOWS = [TEMPLATE / ".github/workflows/ci.yaml", PROJECT / ".github/workflows/ci.yaml"]
DEPENDABOT = [TEMPLATE / ".github/dependabot.yml", PROJECT / ".github/dependabot.yml"]
# `uses: owner/repo@<40 hex> # v1.2.3`: a commit cannot be moved the way a tag can.
PINNED = re.compile(r"^\s*-?\s*uses: ([\w.-]+/[\w.-]+)@([0-9a-f]{40}) # (v\d+\.\d+\.\d+)$")


def check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with the SchemaStore schema it vendors: works offline."""
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=["template", "project"])
def test_every_action_is_pinned_to_a_commit(workflow: Path) -> None:
    text = workflow.read_text()
    steps = [step for job in yaml.safe_load(text)["jobs"].values() for step in job["steps"]]
    used = [step["uses"] for step in steps if "uses" in step]
    lines = [line for line in text.splitlines() if "uses:" in line]
    assert len(lines) == len(used) >= 2
    unpinned = [line for line in lines if not PINNED.match(line)]
    assert not unpinned, "pin each action to a full commit SHA, version in a comment"


def test_both_workflows_pin_the_same_versions() -> None:
    pins: dict[str, set[tuple[str, str]]] = {}
    for workflow in WORKFLOWS:
        for match in filter(None, map(PINNED.match, workflow.read_text().splitlines())):
            pins.setdefault(match[1], set()).add((match[2], match[3]))
    assert set(pins) == {"actions/checkout", "actions/setup-python", "astral-sh/setup-uv", "actions/cache"}
    assert all(len(versions) == 1 for versions in pins.values()), pins


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=["template", "project"])
def test_workflow_is_valid_and_least_privileged(workflow: Path) -> None:
    result = check_jsonschema("vendor.github-workflows", workflow)
    assert result.returncode == 0, result.stdout + result.stderr
    parsed = yaml.safe_load(workflow.read_text())
    assert parsed["permissions"] == {"contents": "read"}
    checkouts = [
        step for job in parsed["jobs"].values() for step in job["steps"]
        if step.get("uses", "").startswith("actions/checkout@")
    ]  # fmt: skip
    assert checkouts
    assert all(step["with"]["persist-credentials"] is False for step in checkouts)


@pytest.mark.parametrize("config", DEPENDABOT, ids=["template", "project"])
def test_dependabot_config_is_valid_and_covers_uv_and_actions(config: Path) -> None:
    result = check_jsonschema("vendor.dependabot", config)
    assert result.returncode == 0, result.stdout + result.stderr
    updates = {update["package-ecosystem"]: update for update in yaml.safe_load(config.read_text())["updates"]}
    assert set(updates) == {"uv", "github-actions"}
    for update in updates.values():
        assert update["schedule"]["interval"] == "weekly"
        assert update["cooldown"]["default-days"] >= 3, "new releases wait a few days"
        assert update["groups"], "one pull request per ecosystem, not one per package"


def test_dependabot_schema_knows_cooldown(tmp_path: Path) -> None:
    """The validation above means something: a misspelt cooldown key is refused."""
    config = tmp_path / "dependabot.yml"
    text = (PROJECT / ".github/dependabot.yml").read_text()
    config.write_text(text.replace("default-days:", "default-day:"))
    result = check_jsonschema("vendor.dependabot", config)
    assert result.returncode == 1
    assert "'default-day' was unexpected" in result.stdout


def test_every_end_to_end_test_runs_in_one_half() -> None:
    """scripts/test.sh runs tests/test_e2e.py as two halves, one per worker (tests/conftest.py): a slow test in
    neither would run on whichever worker is free, and sync its projects there once more."""
    from tests import test_e2e

    assert {name for name in vars(test_e2e) if name.startswith("test_")} == set(E2E_HALF)
    assert work_unit("tests/test_e2e.py::test_train_cloud_offline[aws-text-generation]") == "e2e-generation"
    assert work_unit("tests/test_e2e.py::test_smoke_training_through_uv") == "e2e-classification"
    assert work_unit("tests/test_bake.py::test_layout[text-generation-aws]") == "tests/test_bake.py"


def test_baked_project_carries_upkeep_files(baker: Callable[..., Baked]) -> None:
    project = baker()
    assert (project.path / ".github/dependabot.yml").read_text() == (PROJECT / ".github/dependabot.yml").read_text()
    config = yaml.safe_load((project.path / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"], "nothing to download"
    hooks = config["repos"][0]["hooks"]
    assert {"ruff-check", "ruff-format", "mypy", "trailing-whitespace", "end-of-file-fixer"} <= {h["id"] for h in hooks}
    assert all(hook["language"] == "system" and hook["entry"].startswith("uv run ") for hook in hooks)


def test_no_git_hook_unless_asked(baker: Callable[..., Baked]) -> None:
    project = baker()
    assert (project.path / ".git").is_dir()
    assert not (project.path / ".git/hooks/pre-commit").exists()


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def cruft(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cruft", *args], cwd=cwd, env=clean_env(),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_cruft_update_brings_a_template_change_into_a_project(tmp_path: Path) -> None:
    # A git repository of the template, as a user would clone it (its own files only).
    template = tmp_path / "template"
    template.mkdir()
    for name in ("cookiecutter.json", "local_extensions.py"):
        shutil.copy2(TEMPLATE / name, template / name)
    caches = shutil.ignore_patterns("__pycache__", ".*_cache")
    for folder in ("hooks", PROJECT.name):
        shutil.copytree(TEMPLATE / folder, template / folder, symlinks=True, ignore=caches)
    git(template, "init", "--quiet", "--initial-branch=main")
    git(template, "add", "--all")
    git(template, "commit", "--quiet", "--message", "template v1")

    created = cruft(tmp_path, "create", "--no-input", "--output-dir", str(tmp_path / "out"), str(template))
    assert created.returncode == 0, created.stderr
    project = tmp_path / "out" / "my-ml-project"
    assert (project / ".cruft.json").is_file()
    assert not (project / ".git").exists(), "under cruft the hook only renders"
    git(project, "init", "--quiet", "--initial-branch=main")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "--message", "Initial commit")
    with (project / "src/__init__.py").open("a") as source:
        source.write("# the project's own change\n")
    git(project, "commit", "--quiet", "--all", "--message", "project change")

    readme = template / PROJECT.name / "_tasks" / "text-classification" / "README.md"  # the default task's
    readme.write_text(readme.read_text() + "\n## Upkeep note\n\nAdded to the template after generation.\n")
    git(template, "commit", "--quiet", "--all", "--message", "template v2")

    assert cruft(project, "check").returncode != 0, "the project is behind the template"
    diff = cruft(project, "diff", "--checkout", "main")  # the project against the newest template
    assert diff.returncode == 0, diff.stderr
    assert "+Added to the template after generation." in diff.stdout
    updated = cruft(project, "update", "--skip-apply-ask")
    assert updated.returncode == 0, updated.stderr
    assert "Added to the template after generation." in (project / "README.md").read_text()
    assert "# the project's own change" in (project / "src/__init__.py").read_text(), "local work kept"
    assert set(git(project, "status", "--porcelain").splitlines()) == {" M .cruft.json", "M  README.md"}
    assert not list(project.rglob("*.rej")), "the update applied cleanly"
    assert cruft(project, "check").returncode == 0


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Baked:
    """A locked, synced project whose user asked for the git hook."""
    project = bake(tmp_path_factory.mktemp("hooked"), lock=True, install_pre_commit="yes")
    synced = project.run("uv", "sync", "--locked")
    assert synced.returncode == 0, synced.stderr[-3000:]
    return project


def offline(pre_commit_home: Path) -> dict[str, str]:
    """Nothing may be fetched: no package index for uv, no remote git protocol for pre-commit."""
    return {"PRE_COMMIT_HOME": str(pre_commit_home), "UV_OFFLINE": "1", "GIT_ALLOW_PROTOCOL": "file"}


def cloned_repositories(pre_commit_home: Path) -> int:
    with sqlite3.connect(pre_commit_home / "db.db") as db:
        count: int = db.execute("SELECT COUNT(*) FROM repos").fetchone()[0]
    return count


@pytest.mark.slow
def test_git_hook_installed_when_asked(hooked: Baked) -> None:
    hook = hooked.path / ".git/hooks/pre-commit"
    assert hook.is_file()
    assert "pre-commit" in hook.read_text()


@pytest.mark.slow
def test_pre_commit_passes_offline_in_a_fresh_project(hooked: Baked, tmp_path: Path) -> None:
    result = hooked.run("uv", "run", "pre-commit", "run", "--all-files", env=offline(tmp_path))
    assert result.returncode == 0, result.stdout[-5000:]
    passed = re.findall(r"^(.+?)\.{3,}Passed$", result.stdout, re.M)
    assert len(passed) == 9, result.stdout
    assert cloned_repositories(tmp_path) == 0
    assert hooked.run("git", "status", "--porcelain").stdout == "", "nothing needed fixing"


@pytest.mark.slow
def test_installed_hook_refuses_a_bad_commit(hooked: Baked, tmp_path: Path) -> None:
    (hooked.path / "notes.md").write_text("trailing spaces   \n")
    hooked.run("git", "add", "notes.md")
    refused = hooked.run("git", "commit", "--message", "notes", env=offline(tmp_path))
    assert refused.returncode != 0
    assert "- hook id: trailing-whitespace" in refused.stderr  # git sends a hook's output to stderr
    assert (hooked.path / "notes.md").read_text() == "trailing spaces\n", "the hook fixed the file"
    hooked.run("git", "add", "notes.md")
    accepted = hooked.run("git", "commit", "--message", "notes", env=offline(tmp_path))
    assert accepted.returncode == 0, accepted.stderr[-3000:]
