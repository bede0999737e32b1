#!/usr/bin/env bash
# The whole test suite: fast template tests, then the slow end-to-end ones (generate a
# project per cloud, uv sync, its lint/tests/smoke training, train-cloud offline, Pants in
# the template and in a generated project). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure_uv.sh
uv sync --locked
# Two workers (pytest-xdist): the slow end-to-end tests run as two halves side by side, each in
# one worker (tests/conftest.py's E2E_HALVES); the other test files fill in around them.
uv run pytest -n 2 --dist loadscope --no-loadscope-reorder "$@"
