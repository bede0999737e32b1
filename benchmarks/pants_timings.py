"""The inner loop in a generated project: `uv run`, the test tiers, the smoke run, Pants.

Run from the template checkout on an idle machine:
`uv run python benchmarks/pants_timings.py [--skip-pants] [--skip-template-suite]`;
`--template-suite-only` times the template's quick suite and adds it to the existing results.
In a freshly generated project: `uv sync --all-groups --compile-bytecode` (the README's set-up),
`uv run true`, the first and the second `uv run test` (the quick tier), the first and the second
`uv run train-local --smoke`, pytest collection, `uv run lint`, `uv run test-all`. Then Pants:
"cold" is the first `./pants tailor --check lint check test ::` (lockfile generation included;
Pants' and uv's download caches on this machine as they are; `--skip-pants` keeps the last Pants
numbers), "warm" repeats `./pants test ::` with pantsd up, then without it; each "edit" appends a
comment to one module and records which test files re-ran and how long the answer took. Last,
the template's quick suite (`pytest -m "not slow"`). The previous results stay beside the new
ones ("previous"), with the load average before and after. Writes benchmarks/results/pants_timings.json.
"""

from __future__ import annotations

import json
import os
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


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def uv_loop(project: Path, seconds: dict[str, float]) -> None:
    sync = ["uv", "sync", "--all-groups", "--compile-bytecode"]
    seconds[" ".join(sync)] = timed(sync, project)
    timed(["uv", "run", "true"], project)  # the first call builds the project's own wheel
    seconds["uv run true"] = min(timed(["uv", "run", "true"], project) for _ in range(5))
    for run in ("first", "second"):  # the first straight after the sync, as a new user runs it
        seconds[f"uv run test ({run})"] = timed(["uv", "run", "test", "-q", "-p", "no:cacheprovider"], project)
    seconds["uv run train-local --smoke (first)"] = timed(["uv", "run", "train-local", "--smoke"], project)
    seconds["uv run train-local --smoke (second)"] = timed(["uv", "run", "train-local", "--smoke"], project)
    seconds["pytest collection (uv run test --collect-only)"] = timed(
        ["uv", "run", "test", "--collect-only", "-q", "-p", "no:cacheprovider"], project
    )
    seconds["uv run lint"] = timed(["uv", "run", "lint"], project)
    seconds["uv run test-all"] = timed(["uv", "run", "test-all", "-q", "-p", "no:cacheprovider"], project)


def pants_loop(project: Path, seconds: dict[str, float], reran: dict[str, list[str]]) -> list[str]:
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
    return sorted(cold)


def main() -> None:
    previous_file = RESULTS / "pants_timings.json"
    previous = json.loads(previous_file.read_text()) if previous_file.exists() else {}
    if "--template-suite-only" in sys.argv:
        previous["seconds"]["template: pytest -m 'not slow'"] = template_suite()
        previous.pop("machine", None)
        print(f"wrote {write('pants_timings', previous)}")
        return
    seconds: dict[str, float] = {}
    reran: dict[str, list[str]] = {}
    test_files: list[str] = []
    load_before = load()
    with tempfile.TemporaryDirectory() as scratch:
        project = generate(Path(scratch))
        uv_loop(project, seconds)
        if "--skip-pants" not in sys.argv:
            test_files = pants_loop(project, seconds, reran)
    if "--skip-template-suite" not in sys.argv:
        seconds["template: pytest -m 'not slow'"] = template_suite()
    elif (kept := previous.get("seconds", {}).get("template: pytest -m 'not slow'")) is not None:
        seconds["template: pytest -m 'not slow'"] = kept  # from the last run that measured it
    if "--skip-pants" in sys.argv:  # keep the last measured Pants numbers, marked as such
        seconds |= {name: value for name, value in previous.get("seconds", {}).items() if name.startswith("pants")}
        test_files, reran = previous.get("test_files", []), previous.get("rerun_after_editing", {})
    results = {
        "pants_numbers_from_an_earlier_run": "--skip-pants" in sys.argv,
        "load_average_before": load_before,
        "load_average_after": load(),
        "seconds": seconds,
        "test_files": test_files,
        "rerun_after_editing": reran,
        # The numbers before this round's changes: kept from the first run that replaced them.
        "previous": previous.get("previous")
        or {key: previous[key] for key in ("machine", "seconds", "rerun_after_editing") if key in previous},
    }
    path = write("pants_timings", results)
    before = results["previous"].get("seconds", {})
    rows = [[name, value, before.get(name, "")] for name, value in seconds.items()]
    print(table(rows, ["step", "seconds", "before"]))
    for module, files in reran.items():
        print(f"after editing {module}: re-ran {files} of {len(test_files)} test files")
    print(f"\nload average before/after: {load_before} / {results['load_average_after']}; wrote {path}")


if __name__ == "__main__":
    main()
