#!/usr/bin/env bash
# The main job: generate a project from this template, install it, and run its offline
# smoke training (tiny model and data built locally; no Hub access needed).
#   bash scripts/quickstart.sh [output-dir]      (default: ./quickstart)
set -euo pipefail
template="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(mkdir -p "${1:-quickstart}" && cd "${1:-quickstart}" && pwd)"
source "$template/scripts/ensure_uv.sh"

project="$out/my-ml-project"
if [[ -e "$project" ]]; then echo "error: $project exists: remove it or pass another folder" >&2; exit 1; fi
uvx --from 'cookiecutter>=2.6' cookiecutter "$template" --no-input -o "$out"
cd "$project"
uv sync
uv run train-local --smoke
echo
echo "Trained: $project/models/latest -> $(readlink "$project/models/latest") (metrics above)"
echo "Serve it: cd $project && uv run serve"
