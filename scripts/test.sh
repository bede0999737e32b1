#!/usr/bin/env bash
# The whole test suite: fast template tests, then the slow end-to-end ones (generate a
# project per cloud, uv sync, its lint/tests/smoke training, train-cloud offline, Pants in
# the template and in a generated project). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure_uv.sh
uv sync --locked
uv run pytest "$@"
