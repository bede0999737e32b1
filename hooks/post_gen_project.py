"""Make the freshly generated project usable at once.

First it puts the chosen task's own files in place (`_tasks/<task>/`: its settings model and
files, `src/task/`, `tests/task/`, its notebook and README) and removes every task folder, so
a project carries the shared core and its own task's code only. Then it locks the dependencies
with uv (when uv and the package index answer), makes the first git commit (when git is
present), installs the pre-commit git hook if the user asked for it, then prints the next
commands. Under cruft it only renders.
Nothing here is fatal: a missing tool becomes a note saying what to run by hand.

Cookiecutter renders this file with Jinja; the answers arrive as JSON, as in
pre_gen_project.py, inside main() so the file stays importable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Template tests and offline generation set this to skip the (slow) `uv lock`.
SKIP_LOCK_ENV = "MLCC_SKIP_UV_LOCK"
LOCK_TIMEOUT_S = 300
TASKS_DIR = Path("_tasks")


def apply_task(task: str, root: Path = Path()) -> None:
    """Copy the task's files into place (they add to the shared ones, never replace one), then remove every task
    folder."""
    chosen = root / TASKS_DIR / task
    if not chosen.is_dir():  # the pre-generation hook checks the answer: a template bug
        raise FileNotFoundError(chosen)
    for source in sorted(chosen.rglob("*")):
        if source.is_file():
            target = root / source.relative_to(chosen)
            if target.exists():  # a shared file is the same for every task: a template bug
                raise FileExistsError(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    shutil.rmtree(root / TASKS_DIR)


def run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def lock() -> str:
    if os.environ.get(SKIP_LOCK_ENV):
        return f"skipped `uv lock` ({SKIP_LOCK_ENV} is set): run `uv lock` before `uv sync --locked`"
    if shutil.which("uv") is None:
        return "uv is not installed: install it (https://docs.astral.sh/uv/), then run `uv lock`"
    try:
        result = run(["uv", "lock"], timeout=LOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"`uv lock` took over {LOCK_TIMEOUT_S} s (is the package index reachable?): run it again later"
    except KeyboardInterrupt:
        # Every file is written by now: the project is complete but for its lock file.
        print(f"\ninterrupted: {Path.cwd()} is complete except uv.lock: run `uv lock` in it", flush=True)
        raise SystemExit(130) from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`uv lock` failed ({last}): run it again once the package index is reachable"
    return "locked dependencies in uv.lock"


def commit() -> str:
    if shutil.which("git") is None:
        return "git is not installed: version control was not set up"
    if run(["git", "rev-parse", "--is-inside-work-tree"]).returncode == 0:
        return "already inside a git repository: left it alone"
    run(["git", "init", "--quiet", "--initial-branch=main"])
    run(["git", "add", "--all"])
    result = run(["git", "commit", "--quiet", "--message", "Initial commit from modern-ml-cookiecutter"])
    if result.returncode != 0:
        return "git repository created, nothing committed (set git user.name and user.email, then commit)"
    return "created a git repository with a first commit"


def install_git_hook(answer: str) -> str:
    later = "`uv run pre-commit install` adds it"
    if answer != "yes":
        return f"pre-commit git hook not installed (install_pre_commit={answer}): {later}"
    if shutil.which("uv") is None:
        return f"uv is not installed, so the pre-commit git hook is not either: install uv, then {later}"
    if not Path(".git").is_dir():
        return f"this project has no git repository of its own: after `git init`, {later}"
    try:
        # Only the dev group (pre-commit and the tools its hooks call): fast, no torch download.
        result = run(["uv", "run", "--only-group", "dev", "pre-commit", "install"], timeout=LOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"installing pre-commit took over {LOCK_TIMEOUT_S} s (is the package index reachable?): {later}"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`uv run pre-commit install` failed ({last}): run it again once the package index is reachable"
    return "installed the pre-commit git hook: every commit runs ruff, mypy and the file checks"


def rendered_by_cruft(answers: dict[str, object]) -> bool:
    # cruft adds the template's commit to the answers (plain cookiecutter does not), for
    # `cruft create` and for the two throwaway renders `cruft update` diffs. Those renders
    # must hold only template files: a `.git` or a fresh uv.lock in them would be diffed
    # too, and the update would not apply.
    return "_commit" in answers


def main() -> int:
    answers = json.loads(r"""{{ cookiecutter | tojson }}""")
    apply_task(answers.get("task", "text-classification"))  # part of rendering: under cruft too
    if rendered_by_cruft(answers):
        notes = [
            "rendered by cruft: left uv, git and pre-commit alone; in a new project run `uv lock`,"
            " then `git init` and commit everything, .cruft.json included"
        ]
    else:
        notes = [lock(), commit(), install_git_hook(answers["install_pre_commit"])]
    project = Path.cwd().name
    print("\n".join(f"  - {note}" for note in notes))
    print(
        f"\nNext:\n  cd {project}\n  uv sync\n"
        "  uv run train-local --smoke   # offline check, under a minute\n"
        "  uv run serve                 # API on the promoted run (the newest where none was)\n  uv run test\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
