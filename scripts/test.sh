#!/usr/bin/env bash
# The whole test suite: fast template tests, then the slow end-to-end ones (generate a
# project per cloud, uv sync, its lint/tests/smoke training, train-cloud offline, Pants in
# the template and in a generated project). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure_uv.sh
uv sync --locked
# A worker per core, at most 3 (pytest-xdist): the end-to-end projects run side by side, each
# project's tests in one worker (tests/test_e2e.py's xdist groups), so that while Pants in one
# waits on downloads and locks, another computes.
uv run pytest -n auto --maxprocesses 3 --dist loadgroup "$@"
