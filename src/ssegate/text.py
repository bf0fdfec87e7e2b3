"""Text from outside (an upstream, a publisher) made safe for the wire.

JSON may escape half a UTF-16 surrogate pair (``"\\ud800"``); Python decodes it into a ``str``
that no UTF-8 encoder accepts, so one such token would otherwise end a stream with an internal
error. Upstream text has every lone surrogate replaced by U+FFFD, as a WHATWG decoder does with
invalid bytes; request bodies holding one are refused (see :func:`lone_surrogate_in`).

Nothing here runs on the per-token path unless the fast parse failed: orjson refuses lone
surrogates, and only then is the slow, tolerant path taken.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON text can only decode to a surrogate through a \u escape (raw ones are invalid UTF-8).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def has_surrogate(text: str) -> bool:
    """Does ``text`` hold a code point UTF-8 cannot encode (any surrogate)?"""
    return _SURROGATE.search(text) is not None


def scrub(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (valid pairs joined into one character)."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def scrub_value(value: Any) -> Any:
    """A decoded JSON value with :func:`scrub` applied to every string and key in it."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(k): scrub_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_value(v) for v in value]
    return value


def loads_upstream(data: str | bytes) -> Any:
    """An upstream's JSON: orjson's parse, or if that fails on a lone surrogate, the standard
    parser's with the surrogates scrubbed. Other malformed JSON raises ``orjson.JSONDecodeError``."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        if _SURROGATE_ESCAPE.search(raw) is None:
            raise
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise orjson.JSONDecodeError(
                "invalid JSON from the upstream", raw.decode("utf-8", "replace"), 0
            ) from None
        return scrub_value(value)


def dumps_scrubbed(value: Any) -> str:
    """Compact JSON text of ``value``; strings with lone surrogates are scrubbed first."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return orjson.dumps(scrub_value(value)).decode()


def lone_surrogate_in(raw: bytes | bytearray, value: Any) -> bool:
    """Does ``value`` (``raw`` JSON, decoded) hold a lone surrogate anywhere? A byte scan first: a
    body without a ``\\uD800``-``\\uDFFF`` escape cannot."""
    if _SURROGATE_ESCAPE.search(raw) is None:
        return False
    return _has_lone(value)


def _has_lone(value: Any) -> bool:
    if isinstance(value, str):
        return scrub(value) != value
    if isinstance(value, dict):
        return any(_has_lone(k) or _has_lone(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone(v) for v in value)
    return False
