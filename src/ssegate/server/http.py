"""Small HTTP helpers for routes: JSON answers, bounded JSON bodies, Last-Event-ID checks."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from ssegate.errors import RequestError

# Browsers send back whatever id we wrote; ours are < 40 bytes. Anything longer, or with control
# characters, was not made by us and could be used to smuggle data into logs or headers.
MAX_LAST_EVENT_ID_BYTES = 128


def error_response(exc: RequestError) -> JSONResponse:
    body = {"error": {"code": exc.code, "message": exc.message, **exc.extra}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def read_json_body(request: Request, max_bytes: int) -> Any:
    """The request's JSON body; 413 past ``max_bytes`` (checked while reading, not after)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > max_bytes:
            raise _too_large(max_bytes)
    if not received.strip():
        raise RequestError(400, "invalid_json", "the request body is empty; send a JSON object")
    try:
        return json.loads(received)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None


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
