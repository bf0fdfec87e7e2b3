"""Small HTTP helpers for routes: JSON answers, bounded JSON bodies, Last-Event-ID checks."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from ssegate.errors import RequestError
from ssegate.text import lone_surrogate_in

# Browsers send back whatever id we wrote; ours are < 40 bytes. Anything longer, or with control
# characters, was not made by us and could be used to smuggle data into logs or headers.
MAX_LAST_EVENT_ID_BYTES = 128
# Deepest nesting of arrays and objects a request body may have. Ours need 4 (messages, content
# blocks, tool schemas a few more); Python's parser would fail with a RecursionError near 1,000.
MAX_JSON_DEPTH = 64
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPENING = frozenset(b"[{")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def error_response(exc: RequestError) -> JSONResponse:
    body = {"error": {"code": exc.code, "message": exc.message, **exc.extra}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def read_json_body(request: Request, max_bytes: int) -> Any:
    """The request's JSON body; 413 past ``max_bytes`` (checked while reading, not after), 408 if
    it is not all there within the app's ``body_timeout``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    received = bytearray()
    timeout = _body_timeout(request)
    try:
        async with asyncio.timeout(timeout or None):
            async for chunk in request.stream():
                received += chunk
                if len(received) > max_bytes:
                    raise _too_large(max_bytes)
    except TimeoutError:
        raise RequestError(
            408,
            "body_timeout",
            f"the request body did not arrive within {timeout:g} s",
            headers={"connection": "close"},  # what is still coming is no request
        ) from None
    if not received.strip():
        raise RequestError(400, "invalid_json", "the request body is empty; send a JSON object")
    if received.count(b"[") + received.count(b"{") > MAX_JSON_DEPTH:  # else it cannot be too deep
        _check_depth(received)
    try:
        value = json.loads(received)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    if lone_surrogate_in(received, value):
        raise RequestError(
            400,
            "invalid_unicode",
            "the request body holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), "
            "which is not text",
        )
    return value


def _check_depth(body: bytes | bytearray) -> None:
    """400 ``json_too_deep`` if arrays and objects nest deeper than :data:`MAX_JSON_DEPTH`,
    counted on the bytes before a recursive parser sees them (strings removed first, at C speed)."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        depth += 1 if byte in _OPENING else -1
        if depth > MAX_JSON_DEPTH:
            raise RequestError(
                400,
                "json_too_deep",
                f"the request body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels",
            )


def _body_timeout(request: Request) -> float:
    state = getattr(request.app.state, "ssegate", None)
    return float(state.settings.body_timeout) if state is not None else 0.0


def _too_large(max_bytes: int) -> RequestError:
    return RequestError(413, "body_too_large", f"the request body is larger than {max_bytes} bytes")


def last_event_id(request: Request) -> str | None:
    """The resume point: the ``Last-Event-ID`` header, else the ``last_event_id`` query parameter."""
    value = request.headers.get("last-event-id")
    if value is None:
        value = request.query_params.get("last_event_id")
    if value is None or value == "":
        return None
    if len(value.encode("utf-8", "surrogatepass")) > MAX_LAST_EVENT_ID_BYTES:
        raise RequestError(
            400, "invalid_last_event_id", f"Last-Event-ID is longer than {MAX_LAST_EVENT_ID_BYTES} bytes"
        )
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise RequestError(400, "invalid_last_event_id", "Last-Event-ID contains control characters")
    return value


def wants_event_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")
