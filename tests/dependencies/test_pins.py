"""pyproject.toml's ranges, constraints.txt's exact set, and the virtualenv the suite runs in agree.

``make run`` and ``make test`` install constraints.txt (scripts/setup.sh); ``make test-latest`` runs
the same suite on the newest releases instead, with SSEGATE_UNLOCKED=1.
"""

from __future__ import annotations

import os
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [Requirement(line) for line in PROJECT["dependencies"]]
DEV = [Requirement(line) for line in PROJECT["optional-dependencies"]["dev"]]
# Libraries whose internals ssegate reaches into (issue 25): a new major may move them silently.
INTERNALS_TOUCHED = {"uvicorn", "uvloop", "httptools", "aiohttp", "anthropic", "openai", "redis", "starlette"}
_FIX = "add the pin to constraints.txt (`make test-latest` then `make lock` regenerates it)"


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not name==version"
            pins[canonicalize_name(name)] = Version(version)
    return pins


PINS = _pins()


def test_every_requirement_is_pinned_inside_its_range() -> None:
    wrong = []
    for requirement in REQUIREMENTS + DEV:
        pin = PINS.get(canonicalize_name(requirement.name))
        if pin is None:
            wrong.append(f"{requirement}: not pinned; {_FIX}")
        elif not requirement.specifier.contains(pin, prereleases=True):
            wrong.append(f"{requirement}: pinned at {pin}, outside its range")
    assert wrong == []


def test_every_runtime_requirement_has_a_floor_and_stops_before_the_next_major() -> None:
    wrong = []
    for requirement in REQUIREMENTS:
        operators = {spec.operator: Version(spec.version) for spec in requirement.specifier}
        ceiling, pin = operators.get("<"), PINS.get(canonicalize_name(requirement.name))
        if ">=" not in operators or ceiling is None:
            wrong.append(f"{requirement}: needs both >= and <")
        elif pin is not None and ceiling > Version(str(pin.major + 1)):
            wrong.append(f"{requirement}: the ceiling is past the tested {pin}'s next major")
    assert wrong == []
    named = {canonicalize_name(requirement.name) for requirement in REQUIREMENTS}
    assert sorted(INTERNALS_TOUCHED - named) == []


@pytest.mark.skipif(bool(os.environ.get("SSEGATE_UNLOCKED")), reason="make test-latest: newest releases")
def test_the_virtualenv_holds_exactly_the_pinned_versions() -> None:
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in metadata.distributions()}
    differ = [
        f"{name}: {installed[name]} installed, {pin} pinned (scripts/setup.sh test installs the pins)"
        for name, pin in sorted(PINS.items())
        if name in installed and installed[name] != pin
    ]
    assert differ == []
