"""The fast paths: every place ssegate relies on another library's internals, and the switch for them.

ssegate runs on public APIs alone (stock uvicorn, Starlette's middleware stack, the vendor SDKs'
own streaming calls). Each module of this package replaces one piece of that with a shortcut that
reaches into a library's private parts, because the public way costs measurably more per token,
per start or per held connection (``docs/performance.md`` says what each buys). No module outside
this package may import those internals (``tests/test_fast_seam.py`` checks it).

A shortcut runs only where it is known to work: not switched off by ``SSEGATE_FAST_PATHS`` (``0``:
all of them; ``-name,-name``: those named, see :func:`switched_off`) and with every library it
touches at a version inside :data:`SHORTCUTS`' tested range. Outside that, it is off and ssegate
takes the public path; start-up says so once, in one warning (:func:`announce`). Callers ask
:func:`enabled` with a shortcut's name before taking it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from importlib import metadata

from ssegate.errors import SettingsError

__all__ = [
    "ACCEPT",
    "BODY_PUSH",
    "DIRECT_ATTEMPT",
    "ENV",
    "HELD_STREAMS",
    "LIVE_SOCKET",
    "SERVED_APP",
    "SHORTCUTS",
    "SLIM_PROTOCOL",
    "UPSTREAM_LANE",
    "Shortcut",
    "announce",
    "enabled",
    "problems",
    "switched_off",
]

logger = logging.getLogger("ssegate.fast")

# The switch: ``SSEGATE_FAST_PATHS=0`` (or off/false/no) runs every part of ssegate on public APIs;
# ``SSEGATE_FAST_PATHS=-upstream_lane,-body_push`` turns off the shortcuts named (each earns its place:
# the bench's ablation turns them off one at a time, docs/performance.md).
ENV = "SSEGATE_FAST_PATHS"
_OFF_WORDS = frozenset({"0", "off", "false", "no"})
_ON_WORDS = frozenset({"", "1", "on", "true", "yes"})

Version = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Shortcut:
    """One fast path: its module, and per distribution the versions it was tested with
    (``[lowest, below)``). ``needs``: shortcuts it builds on (off when any of them is)."""

    module: str
    tested: dict[str, tuple[Version, Version]]
    needs: tuple[str, ...] = ()


ACCEPT = "accept"
SLIM_PROTOCOL = "slim_protocol"
SERVED_APP = "served_app"
HELD_STREAMS = "held_streams"
LIVE_SOCKET = "live_socket"
DIRECT_ATTEMPT = "direct_attempt"
UPSTREAM_LANE = "upstream_lane"
BODY_PUSH = "body_push"

# Both SDKs vendor httpx-aiohttp (their aiohttp transport) on httpx2: tested as they ship it.
_SDKS: dict[str, tuple[Version, Version]] = {
    "anthropic": ((2, 17), (2, 18)),
    "openai": ((3, 63), (3, 64)),
    "httpx2": ((2, 17), (2, 18)),
}

# The tested versions, in one place. A release outside a range may have changed the internal a
# shortcut relies on: run the suite against it (``make test-latest``) before widening a range.
SHORTCUTS: dict[str, Shortcut] = {
    # Accepting a batch of connections per wake-up (uvicorn's Server start-up, uvloop's
    # connect_accepted_socket driven without a task, the socket's private _accept).
    ACCEPT: Shortcut(
        "ssegate._fast.accept",
        {"uvicorn": ((0, 55), (0, 56)), "uvloop": ((0, 23), (0, 24))},
    ),
    # uvicorn's httptools protocol with lighter per-connection objects.
    SLIM_PROTOCOL: Shortcut(
        "ssegate._fast.protocol",
        {"uvicorn": ((0, 55), (0, 56)), "httptools": ((0, 9), (0, 10))},
    ),
    # uvicorn's proxy-headers middleware run to its end before the app's first frame.
    SERVED_APP: Shortcut("ssegate._fast.stack", {"uvicorn": ((0, 55), (0, 56))}),
    # The event-stream routes called past Starlette's middleware stack.
    HELD_STREAMS: Shortcut("ssegate._fast.stack", {"starlette": ((1, 10), (1, 11))}),
    # The live fan-out writes to the socket under uvicorn's httptools response cycle.
    LIVE_SOCKET: Shortcut("ssegate._fast.live_socket", {"uvicorn": ((0, 55), (0, 56))}),
    # A call's first attempt sent with the SDK's prepared request on its aiohttp session.
    DIRECT_ATTEMPT: Shortcut(
        "ssegate._fast.direct",
        {**_SDKS, "aiohttp": ((3, 14), (3, 15))},
    ),
    # The upstream body's chunked framing done ahead of aiohttp's parser.
    UPSTREAM_LANE: Shortcut(
        "ssegate._fast.lane", {"aiohttp": ((3, 14), (3, 15))}, needs=(DIRECT_ATTEMPT, BODY_PUSH)
    ),
    # The upstream body read from aiohttp's buffer, and pushed from the socket's callback (aiohttp's
    # protocol, the SDKs' vendored httpx-aiohttp response stream).
    BODY_PUSH: Shortcut("ssegate._fast.body", {**_SDKS, "aiohttp": ((3, 14), (3, 15))}),
}


def enabled(name: str) -> bool:
    """Whether the shortcut ``name`` may run in this process."""
    return name not in _decide()


def problems() -> dict[str, str]:
    """The shortcuts that are off, each with why."""
    return dict(_decide())


def announce() -> None:
    """Say at start-up, once per process, which shortcuts are off because of a library's version,
    in one warning (switched off on purpose with ``SSEGATE_FAST_PATHS``: one info line)."""
    off = _decide()
    if not off or _said:
        return
    _said.append(True)
    chosen = switched_off()
    if chosen == set(SHORTCUTS):
        logger.info("ssegate: fast paths off (%s=0): public APIs only", ENV)
        return
    if chosen:
        logger.info("ssegate: fast paths switched off (%s): %s", ENV, ", ".join(sorted(chosen)))
    if versions := _by_versions():
        lines = "; ".join(f"{name}: {why}" for name, why in versions.items())
        logger.warning(
            "ssegate: fast paths off outside their tested versions (the public path runs): %s", lines
        )


_said: list[bool] = []  # non-empty once announce() has spoken


def switched_off(value: str | None = None) -> set[str]:
    """The shortcuts ``SSEGATE_FAST_PATHS`` (or ``value``) turns off by name: all of them for
    ``0``/off/false/no, none for unset/``1``/on/true/yes, and those named for a comma-separated list
    of ``-name`` items (``-upstream_lane,-body_push``). Any other value is refused (a typo must not
    measure the wrong thing quietly). Shortcuts that need one named are off too (:func:`problems`)."""
    text = (os.environ.get(ENV, "1") if value is None else value).strip().lower()
    if text in _OFF_WORDS:
        return set(SHORTCUTS)
    if text in _ON_WORDS:
        return set()
    items = [item.strip() for item in text.split(",") if item.strip()]
    wrong = [item for item in items if not item.startswith("-") or item[1:] not in SHORTCUTS]
    if wrong:
        raise SettingsError(
            f"{ENV}={text!r}: {', '.join(wrong)} is not '-' and a shortcut's name; use 0, 1, or a "
            f"comma-separated list of -name to turn those off (names: {', '.join(SHORTCUTS)})"
        )
    return {item[1:] for item in items}


@functools.cache
def _decide() -> dict[str, str]:
    """Each shortcut that is off, with why; decided once per process."""
    chosen = switched_off()
    if chosen == set(SHORTCUTS):
        return dict.fromkeys(SHORTCUTS, f"{ENV}=0")
    return _with_needs({name: f"{ENV}: -{name}" for name in SHORTCUTS if name in chosen} | _by_versions())


@functools.cache
def _by_versions() -> dict[str, str]:
    """Each shortcut that a library's version (or absence) turns off, with why."""
    off: dict[str, str] = {}
    for name, shortcut in SHORTCUTS.items():
        for dist, (lowest, below) in shortcut.tested.items():
            found = _installed(dist)
            if found is None:
                off[name] = f"{dist} is not installed"
            elif not lowest <= found < below:
                off[name] = f"{dist} {_show(found)} (tested: {_show(lowest)} to below {_show(below)})"
            if name in off:
                break
    return _with_needs(off)


def _with_needs(off: dict[str, str]) -> dict[str, str]:
    """``off`` and every shortcut that builds on one in it."""
    off = dict(off)
    changed = True
    while changed:
        changed = False
        for name, shortcut in SHORTCUTS.items():
            missing = [need for need in shortcut.needs if need in off]
            if missing and name not in off:
                off[name] = f"needs {', '.join(missing)}"
                changed = True
    return off


def _installed(dist: str) -> Version | None:
    try:
        text = metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def _show(version: Version) -> str:
    return ".".join(map(str, version))


def reset() -> None:
    """Decide again (tests that change the environment or fake a version)."""
    _decide.cache_clear()
    _by_versions.cache_clear()
    _said.clear()
