"""Make the freshly generated project usable at once.

Locks the dependencies with uv (when uv and the package index answer), makes the
first git commit (when git is present), then prints the next commands. Nothing
here is fatal: a missing tool becomes a note saying what to run by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# Template tests and offline generation set this to skip the (slow) `uv lock`.
SKIP_LOCK_ENV = "MLCC_SKIP_UV_LOCK"
LOCK_TIMEOUT_S = 300


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


def main() -> int:
    notes = [lock(), commit()]
    project = Path.cwd().name
    print("\n".join(f"  - {note}" for note in notes))
    print(
        f"\nNext:\n  cd {project}\n  uv sync\n  uv run train-local --smoke   # offline check, under a minute\n"
        "  uv run serve                 # REST API on the newest model\n  uv run test\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
