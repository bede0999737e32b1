"""Pants in a generated project: cold, warm and one-file-changed timings.

Run from the template checkout: `uv run python benchmarks/pants_timings.py`.
"Cold" is the first `./pants tailor --check lint check test ::` in a fresh project
(lockfile generation included; Pants' download caches on this machine as they are).
"Warm" repeats `./pants test ::` with pantsd up; "changed" appends a comment to
src/deployment/serve.py first. Writes benchmarks/results/pants_timings.json.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path

from _common import clean_env, generate, table, write

RESULT = re.compile(r"^[✓✕] (tests/\S+) (succeeded|failed)(?: in [\d.]+s)?(?: \((memoized|cached[^)]*)\))?", re.M)


def pants(project: Path, *goals: str) -> tuple[float, dict[str, str]]:
    """Wall time and, per test file, how its result was obtained ('ran', 'memoized', 'cached')."""
    started = time.perf_counter()
    result = subprocess.run(
        ["./pants", *goals, "::"], cwd=project, env=clean_env(), capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"./pants {' '.join(goals)} failed:\n{result.stderr[-4000:]}")
    outcomes = {match[1]: match[3].split()[0] if match[3] else "ran" for match in RESULT.finditer(result.stderr)}
    return elapsed, outcomes


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        project = generate(Path(scratch))
        cold, cold_tests = pants(project, "tailor", "--check", "lint", "check", "test")
        warm, warm_tests = pants(project, "test")
        serve = project / "src" / "deployment" / "serve.py"
        serve.write_text(serve.read_text() + "# a comment\n")
        changed, changed_tests = pants(project, "test")
        subprocess.run(["./pants", "kill-pantsd"], cwd=project, env=clean_env(), check=False, capture_output=True)
    reran = sorted(name for name, how in changed_tests.items() if how == "ran")
    path = write(
        "pants_timings",
        {
            "seconds": {
                "cold: tailor --check lint check test": cold,
                "warm: test (pantsd)": warm,
                "after editing serve.py: test": changed,
            },
            "tests": {"cold": cold_tests, "warm": warm_tests, "after editing serve.py": changed_tests},
            "rerun_after_editing_serve_py": reran,
        },
    )
    print(table([["cold", cold], ["warm", warm], ["serve.py changed", changed]], ["run", "seconds"]))
    print(f"re-ran after editing serve.py: {reran} of {len(changed_tests)} test files")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
