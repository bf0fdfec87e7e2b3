#!/usr/bin/env bash
# Set up everything ssegate needs on a fresh Debian/Ubuntu machine that has python3.
#   scripts/setup.sh run      the server's needs: a virtualenv with ssegate installed
#   scripts/setup.sh test     plus the dev tools and what the tests talk to: redis-server, nginx, chromium, node
#   scripts/setup.sh latest   as test, but in .venv-latest with the newest releases pyproject.toml allows
# run and test install exactly the versions in constraints.txt, the set the suite passed with.
# Idempotent: it installs only what is missing, so a second run takes seconds (latest always upgrades).
set -euo pipefail
cd "$(dirname "$0")/.."

want=${1:-run}
if [ "$want" = latest ]; then VENV=${VENV:-.venv-latest}; else VENV=${VENV:-.venv}; fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "setup: apt-get install ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt_install python3-venv
fi

if [ "$want" != run ]; then
    # redis-server: the Redis Streams log; nginx-light: the proxy test; chromium: browser tests;
    # nodejs: the JS client's own unit tests (node --test).
    apt_install redis-server nginx-light chromium nodejs
fi

stamp="$VENV/.ssegate-$want-installed"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install -q)
if [ "$want" = latest ]; then
    "${pip[@]}" --upgrade pip
    "${pip[@]}" --upgrade --upgrade-strategy eager -e '.[dev]'
    "$VENV/bin/python" -m pip freeze --exclude-editable > "$VENV/versions.txt"
elif [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    "${pip[@]}" --upgrade pip
    if [ "$want" = test ]; then
        "${pip[@]}" -c constraints.txt -e '.[dev]'
    else
        "${pip[@]}" -c constraints.txt -e .
    fi
    touch "$stamp"
fi

if [ "$want" != run ]; then
    # The AI SDK door's tests run the npm `ai` package (pinned in tests/doors/js/package-lock.json).
    if [ ! -d tests/doors/js/node_modules ] || [ tests/doors/js/package-lock.json -nt tests/doors/js/node_modules ]; then
        echo "setup: npm ci in tests/doors/js"
        npm ci --prefix tests/doors/js --no-audit --no-fund --loglevel=error
    fi
    # The useChat example, built and driven in Chromium by tests/doors/test_example_chat.py.
    if [ ! -d examples/ai_sdk_chat/node_modules ] || [ examples/ai_sdk_chat/package-lock.json -nt examples/ai_sdk_chat/node_modules ]; then
        echo "setup: npm ci in examples/ai_sdk_chat"
        npm ci --prefix examples/ai_sdk_chat --no-audit --no-fund --loglevel=error
    fi
    # Generic SSE clients that reconnect by repeating their POST (pinned in tests/request/js).
    if [ ! -d tests/request/js/node_modules ] || [ tests/request/js/package-lock.json -nt tests/request/js/node_modules ]; then
        echo "setup: npm ci in tests/request/js"
        npm ci --prefix tests/request/js --no-audit --no-fund --loglevel=error
    fi
fi
