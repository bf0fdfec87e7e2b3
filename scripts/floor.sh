#!/usr/bin/env bash
# The floor set: every runtime dependency at the lower bound pyproject.toml gives it, in
# .venv-floor (the test tools at their pins in constraints.txt), then the suites that prove the
# floors (docs/development.md#pinned-dependencies):  scripts/floor.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-floor
floors=$venv/floors.txt
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
python3 - > "$floors.new" <<'PY'
import re
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
for requirement in project["dependencies"]:
    name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
    floor = re.search(r">=\s*([^,;\s]+)", requirement)
    if floor:
        print(f"{name}=={floor.group(1)}")
tools = {"pytest", "pytest-asyncio", "pytest-cov", "pytest-timeout", "pytest-xdist", "hypothesis", "coverage"}
with open("constraints.txt") as f:
    for line in f:
        if line.split("==")[0].strip().lower() in tools:
            print(line.strip())
PY
mv "$floors.new" "$floors"
"$venv/bin/python" -m pip install -q -c "$floors" -e '.[dev]'
echo "floor: $(grep -c == "$floors") constraints ($floors)"
if [ $# -eq 0 ]; then
    set -- -n 2 tests/server tests/log tests/providers tests/gateway
fi
# not the pinned set: test_pins.py skips its exact-versions check, as under make test-latest
SSEGATE_UNLOCKED=1 exec "$venv/bin/python" -m pytest -p no:cacheprovider --tb=line -rfE "$@"
