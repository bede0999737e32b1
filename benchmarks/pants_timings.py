"""The inner loop in a generated project: Pants cold and warm, edits, `uv run`, the test suites.

Run from the template checkout: `uv run python benchmarks/pants_timings.py [--skip-template-suite]`;
`--template-suite-only` times the template's quick suite and adds it to the existing results.
"Cold" is the first `./pants tailor --check lint check test ::` in a fresh project
(lockfile generation included; Pants' and uv's download caches on this machine as they are).
"Warm" repeats `./pants test ::` with pantsd up, then without it; each "edit" appends a
comment to one module and records which test files re-ran and how long the answer took.
Then `uv run true`, `uv run lint` and `uv run test` in the same project, and the template's
quick suite (`pytest -m "not slow"`). Writes benchmarks/results/pants_timings.json.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, TEMPLATE, clean_env, generate, table, timed, write

RESULT = re.compile(r"^[✓✕] (tests/\S+) (succeeded|failed)(?: in [\d.]+s)?(?: \((memoized|cached[^)]*)\))?", re.M)
EDITS = ["src/config.py", "src/deployment/serve.py", "src/models/train_model.py"]


def pants(project: Path, *goals: str) -> tuple[float, dict[str, str]]:
    """Wall time and, per test file, how its result was obtained ('ran', 'memoized', 'cached')."""
    started = time.perf_counter()
    result = subprocess.run(
        ["./pants", *goals], cwd=project, env=clean_env(), capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"./pants {' '.join(goals)} failed:\n{result.stderr[-4000:]}")
    outcomes = {match[1]: match[3].split()[0] if match[3] else "ran" for match in RESULT.finditer(result.stderr)}
    return elapsed, outcomes


def template_suite() -> float:
    return timed(["uv", "run", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider"], TEMPLATE)


def main() -> None:
    if "--template-suite-only" in sys.argv:
        results = json.loads((RESULTS / "pants_timings.json").read_text())
        results["seconds"]["template: pytest -m 'not slow'"] = template_suite()
        results.pop("machine", None)
        print(f"wrote {write('pants_timings', results)}")
        return
    seconds: dict[str, float] = {}
    reran: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        project = generate(Path(scratch))
        seconds["uv sync --all-groups"] = timed(["uv", "sync", "--all-groups"], project)
        seconds["pants cold: tailor --check lint check test ::"], cold = pants(
            project, "tailor", "--check", "lint", "check", "test", "::"
        )
        seconds["pants warm, no change: test :: (pantsd)"], _ = pants(project, "test", "::")
        seconds["pants warm, no change: test :: (no pantsd)"], _ = pants(project, "--no-pantsd", "test", "::")
        for module in EDITS:
            path = project / module
            path.write_text(path.read_text() + "# an edit\n")
            seconds[f"pants after editing {module}: test ::"], outcomes = pants(project, "test", "::")
            reran[module] = sorted(name for name, how in outcomes.items() if how == "ran")
        subprocess.run(["./pants", "kill-pantsd"], cwd=project, env=clean_env(), check=False, capture_output=True)
        subprocess.run(["git", "checkout", "--", *EDITS], cwd=project, check=True)
        timed(["uv", "run", "true"], project)  # the first call builds the project's own wheel
        seconds["uv run true"] = min(timed(["uv", "run", "true"], project) for _ in range(5))
        seconds["uv run lint"] = timed(["uv", "run", "lint"], project)
        seconds["uv run test"] = timed(["uv", "run", "test", "-q", "-p", "no:cacheprovider"], project)
    if "--skip-template-suite" not in sys.argv:
        seconds["template: pytest -m 'not slow'"] = template_suite()
    path = write("pants_timings", {"seconds": seconds, "test_files": sorted(cold), "rerun_after_editing": reran})
    print(table([[name, value] for name, value in seconds.items()], ["step", "seconds"]))
    for module, files in reran.items():
        print(f"after editing {module}: re-ran {files} of {len(cold)} test files")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
