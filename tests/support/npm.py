"""npm projects the tests use (the JS package's dev tools, axe-core), installed as users install them.

``node_modules(dir)`` runs ``npm ci`` from the committed lockfile when the install is missing or
older than the lockfile, under a lock so that parallel test workers install once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JS_PACKAGE = ROOT / "clients" / "js"
_INSTALL_TIMEOUT = 300.0


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock named after ``directory`` (across processes) while the block runs."""
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"ssegate-npm-{digest}.lock"
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(command: list[str], cwd: Path, timeout: float = _INSTALL_TIMEOUT) -> str:
    """Run an npm/node command; its stdout. A failure fails the test with npm's own words."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} (in {cwd}) failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    return done.stdout


def node_modules(directory: Path) -> Path:
    """``directory``'s node_modules, installed by ``npm ci`` if missing or stale."""
    if shutil.which("npm") is None:
        pytest.fail("npm is not installed: run `make test` (scripts/setup.sh test)", pytrace=False)
    installed = directory / "node_modules" / ".package-lock.json"
    with locked(directory):
        lock = directory / "package-lock.json"
        if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
            run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], directory)
    return directory / "node_modules"
