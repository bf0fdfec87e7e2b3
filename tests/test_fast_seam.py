"""The fast paths stay behind one seam (ssegate._fast), and switch themselves off where untested.

The guard reads every module's syntax tree: outside ``ssegate._fast`` nothing may import another
library's internals (``uvicorn.protocols``, ``uvloop``, ``aiohttp.client_proto``, any private
module), name them in a string, or read another object's private attribute.
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from uvicorn.importer import import_from_string

import ssegate
from ssegate import _fast
from ssegate.errors import SettingsError
from ssegate.server.app import create_app
from ssegate.server.fanout import ChunkedSocket
from ssegate.server.main import served, uvicorn_options

SRC = Path(ssegate.__file__).parent
FAST = SRC / "_fast"
FORBIDDEN_MODULES = ("uvicorn.protocols", "uvloop", "aiohttp.client_proto")
# namedtuple's public API is spelled with an underscore.
PUBLIC_UNDERSCORED = frozenset({"_make", "_replace", "_asdict", "_fields", "_field_defaults"})
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
_ATTRIBUTE_FUNCTIONS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _foreign_internal_module(module: str) -> bool:
    if module == "ssegate" or module.startswith("ssegate."):
        return False
    parts = module.split(".")
    return module.startswith(FORBIDDEN_MODULES) or any(_private(part) for part in parts[1:])


def _own_names(tree: ast.AST) -> set[str]:
    """Private names the module itself defines: functions, classes, slots, its own attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            names.add(node.attr)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            names.update(
                c.value
                for c in ast.walk(node.value)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
    return names


def _in_annotations(tree: ast.AST) -> set[int]:
    """The nodes inside type annotations: never evaluated (postponed annotations), so a private
    class named there (``argparse._SubParsersAction``) is relied on by the type checker only."""
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
            roots.append(node.returns)
    return {id(inner) for root in roots for inner in ast.walk(root)}


def violations(source: str, where: str = "<module>") -> Iterator[str]:
    """What in ``source`` reaches into another library's internals."""
    tree = ast.parse(source)
    own = _own_names(tree)
    typing_only = _in_annotations(tree)
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        at = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _foreign_internal_module(alias.name):
                    yield f"{at}: imports {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if _foreign_internal_module(node.module):
                yield f"{at}: imports from {node.module}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # A module path in a string (uvicorn's loop="uvloop" option is public: not a path).
            if _DOTTED.fullmatch(node.value) and _foreign_internal_module(node.value):
                yield f"{at}: names {node.value}"
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            if node.attr not in own and node.attr not in PUBLIC_UNDERSCORED:
                yield f"{at}: reads .{node.attr} of an object it does not define"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _ATTRIBUTE_FUNCTIONS
            and len(node.args) >= 2
        ):
            name = node.args[1]
            literal = name.value if isinstance(name, ast.Constant) and isinstance(name.value, str) else ""
            if _private(literal) and literal not in own:
                yield f"{at}: {node.func.id}(..., {literal!r})"


def test_no_module_outside_the_fast_package_touches_a_library_s_internals() -> None:
    found = [
        problem
        for path in sorted(SRC.rglob("*.py"))
        if FAST not in path.parents
        for problem in violations(path.read_text(), str(path.relative_to(SRC)))
    ]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "import uvloop",
        "from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol",
        "from aiohttp.client_proto import ResponseHandler",
        "from anthropic._models import FinalRequestOptions",
        "kind = 'uvicorn.protocols.http.h11_impl'",
        "def f(sock):\n    return sock._accept()",
        "def f(client):\n    return getattr(client, '_transport', None)",
        "def f(connector, factory):\n    connector._factory = factory",
    ],
)
def test_the_guard_catches_each_kind_of_reach(source: str) -> None:
    assert list(violations(source)) != []


def test_the_guard_lets_a_module_use_its_own_private_parts() -> None:
    source = (
        "from __future__ import annotations\n"
        "import argparse\n"
        "from collections import namedtuple\n"
        "from ssegate import _fast\n"
        "class Group:\n"
        "    def __init__(self):\n"
        "        self._members = []\n"
        "def members(group, commands: argparse._SubParsersAction[argparse.ArgumentParser]):\n"
        "    return group._members, _fast.enabled('accept'), namedtuple('P', 'x')._make([1])\n"
    )
    assert list(violations(source)) == []


def test_every_fast_module_names_a_shortcut_with_tested_versions() -> None:
    modules = {path.stem for path in FAST.glob("*.py")} - {"__init__"}
    named = {shortcut.module.rsplit(".", 1)[1] for shortcut in _fast.SHORTCUTS.values()}
    assert modules == named
    for name, shortcut in _fast.SHORTCUTS.items():
        assert shortcut.tested, name
        for lowest, below in shortcut.tested.values():
            assert lowest < below, name


# ------------------------------------------------------------------------------------ the switch


@pytest.fixture
def decide_again() -> Iterator[None]:
    _fast.reset()
    yield
    _fast.reset()


@pytest.mark.usefixtures("decide_again")
def test_fast_paths_off_serve_the_app_on_stock_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_fast.ENV, "0")
    _fast.reset()
    assert set(_fast.problems()) == set(_fast.SHORTCUTS)
    app = create_app()
    assert served(app) is app
    # uvicorn's own protocol (bounded as every path is: ssegate.server.bounds) and proxy-headers middleware
    options = uvicorn_options()
    assert set(options) == {"http"}
    assert options["http"].inner is import_from_string(uvicorn.config.HTTP_PROTOCOLS["auto"])
    assert ChunkedSocket.under(None) is None


@pytest.mark.usefixtures("decide_again")
def test_a_library_outside_the_tested_versions_switches_its_shortcuts_off_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(_fast.ENV, raising=False)
    real = _fast._installed
    monkeypatch.setattr(_fast, "_installed", lambda dist: (99, 0) if dist == "aiohttp" else real(dist))
    _fast.reset()
    with caplog.at_level(logging.INFO, logger="ssegate.fast"):
        _fast.announce()
        _fast.announce()
    off = _fast.problems()
    assert set(off) == {_fast.DIRECT_ATTEMPT, _fast.BODY_PUSH, _fast.UPSTREAM_LANE}
    assert _fast.enabled(_fast.ACCEPT)
    assert "aiohttp 99.0 (tested: 3.14 to below 3.15)" in off[_fast.BODY_PUSH]
    warnings = [r for r in caplog.records if r.name == "ssegate.fast"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "direct_attempt" in warnings[0].getMessage()


@pytest.mark.usefixtures("decide_again")
def test_named_shortcuts_switch_off_alone_with_those_that_build_on_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(_fast.ENV, " -body_push, -ACCEPT ")
    _fast.reset()
    with caplog.at_level(logging.INFO, logger="ssegate.fast"):
        _fast.announce()
    off = _fast.problems()
    # upstream_lane needs body_push: off with it, and says why
    assert off == {
        _fast.ACCEPT: f"{_fast.ENV}: -accept",
        _fast.BODY_PUSH: f"{_fast.ENV}: -body_push",
        _fast.UPSTREAM_LANE: "needs body_push",
    }
    assert _fast.enabled(_fast.DIRECT_ATTEMPT)
    assert _fast.enabled(_fast.LIVE_SOCKET)
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "ssegate.fast"]
    # chosen, not a version's doing: an info line, no warning
    assert said == [(logging.INFO, f"ssegate: fast paths switched off ({_fast.ENV}): accept, body_push")]


@pytest.mark.usefixtures("decide_again")
def test_a_shortcut_switched_off_alone_leaves_those_it_builds_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_fast.ENV, "-upstream_lane")
    _fast.reset()
    assert set(_fast.problems()) == {_fast.UPSTREAM_LANE}
    assert _fast.enabled(_fast.BODY_PUSH)
    assert _fast.enabled(_fast.DIRECT_ATTEMPT)


@pytest.mark.parametrize("value", ["", "1", "on", "TRUE", "yes"])
def test_the_switch_on_turns_nothing_off(value: str) -> None:
    assert _fast.switched_off(value) == set()


@pytest.mark.parametrize("value", ["0", "off", "False", "no"])
def test_the_switch_off_turns_everything_off(value: str) -> None:
    assert _fast.switched_off(value) == set(_fast.SHORTCUTS)


@pytest.mark.parametrize("value", ["lane", "-lane", "upstream_lane", "-upstream_lane,accept", "2"])
def test_a_switch_that_names_no_shortcut_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="upstream_lane, body_push"):
        _fast.switched_off(value)
