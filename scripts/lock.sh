#!/usr/bin/env bash
# Write constraints.txt, the exact set `make run` and `make test` install, from a virtualenv whose
# suite just passed (usually .venv-latest after `make test-latest`):  scripts/lock.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-latest}
{
    echo "# The exact versions \`make run\` and \`make test\` install (scripts/setup.sh: pip install -c constraints.txt)."
    echo "# The suite passed with them. Regenerate after a green \`make test-latest\`: make lock"
    echo "# (pyproject.toml keeps the ranges; this file keeps the tested point inside them)."
    "$venv/bin/python" -m pip freeze --exclude-editable | grep -v '^#' | LC_ALL=C sort -f
} > constraints.txt
echo "lock: constraints.txt from $venv ($(grep -vc '^#' constraints.txt) packages)"
