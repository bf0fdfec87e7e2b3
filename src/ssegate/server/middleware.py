"""ASGI middleware at the edge: CORS with an explicit allow-list, and the JSON access log.

CORS: a request from an allowed origin gets ``Access-Control-Allow-Origin: <that origin>`` with
credentials allowed (``*`` in the list allows any origin, but then never with credentials, as
browsers require); any other origin gets no CORS headers at all, and its preflight a 403 JSON.

Access log: one JSON line per request on the ``ssegate.access`` logger, written when the response
ends (for a stream: when it closes), with the ``token`` query parameter redacted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable
from typing import Protocol
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ssegate.server.auth import PRINCIPAL_SCOPE_KEY
from ssegate.server.fanout import LIVE_BYTES
from ssegate.server.metrics import UNMATCHED_ROUTE, Metrics

access_logger = logging.getLogger("ssegate.access")

# Present in the scope on the short path of held streams (:mod:`ssegate._fast.stack`): a layer
# above the endpoint that needs the request's end (the access log) puts its RequestEnd here, and
# the endpoint's frame calls it, rather than that layer awaiting the rest in a frame of its own
# (~0.27 KiB for as long as a stream is held).
REQUEST_END = "ssegate.request_end"


class RequestEnd(Protocol):
    def request_ended(self, scope: Scope, *, failed: bool) -> None:
        """The endpoint and its response are done; ``failed`` if they raised."""


ALLOWED_METHODS = "GET, POST, OPTIONS"
# What a browser client sends: a key, a JSON body, and EventSource/fetch resume and cache headers.
ALLOWED_HEADERS = "Authorization, Content-Type, Last-Event-ID, Accept, Cache-Control, X-Api-Key"
EXPOSED_HEADERS = "X-Generation-Id, Location, Retry-After"
# Headers the vendors' browser SDKs add to every request (the front doors, ssegate.server.doors):
# allowed by prefix, as the SDKs' versions add names.
SDK_HEADER_PREFIXES = ("x-stainless-", "anthropic-", "openai-")
PREFLIGHT_MAX_AGE = "600"
REDACTED = "REDACTED"
_SECRET_PARAMS = frozenset({"token"})


def configure_access_log() -> None:
    """Access lines go to stderr as bare JSON (one object per line), apart from other logs."""
    if access_logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_logger.addHandler(handler)
    access_logger.setLevel(logging.INFO)
    access_logger.propagate = False


def parse_origins(value: str | None) -> frozenset[str]:
    """``"https://a.example, https://b.example"`` -> the set (trailing slashes dropped)."""
    if not value:
        return frozenset()
    return frozenset(o.strip().rstrip("/") for o in value.split(",") if o.strip())


class CORSMiddleware:
    def __init__(self, app: ASGIApp, origins: frozenset[str]) -> None:
        self.app = app
        self.any_origin = "*" in origins
        self.origins = origins - {"*"}

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function handing over the next layer's coroutine: no frame of this layer stays
        # alive for as long as a stream is held.
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        origin = _header(scope, b"origin")
        if origin is None:
            return self.app(scope, receive, send)
        allowed = self._allow_headers(origin)
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method") is not None:
            return self._preflight(allowed, _header(scope, b"access-control-request-headers"), send)
        if not allowed:
            return self.app(scope, receive, send)  # no CORS headers: the browser hides the answer

        def send_with_cors(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *allowed]
            return send(message)

        return self.app(scope, receive, send_with_cors)

    def _allow_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        vary = (b"vary", b"Origin")
        expose = (b"access-control-expose-headers", EXPOSED_HEADERS.encode())
        if origin in self.origins:
            return [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-credentials", b"true"),
                expose,
                vary,
            ]
        if self.any_origin:
            return [(b"access-control-allow-origin", b"*"), expose]
        return []

    @staticmethod
    async def _preflight(allowed: list[tuple[bytes, bytes]], requested: str | None, send: Send) -> None:
        if not allowed:
            body = b'{"error":{"code":"origin_not_allowed","message":"this origin may not call this server"}}'
            headers = [(b"content-type", b"application/json"), (b"vary", b"Origin")]
            status = 403
        else:
            body = b""
            sdk = [
                h
                for h in (requested or "").lower().replace(" ", "").split(",")
                if h.startswith(SDK_HEADER_PREFIXES)
            ]
            allow_headers = ", ".join([ALLOWED_HEADERS, *sdk])
            headers = [
                *allowed,
                (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
                (b"access-control-allow-headers", allow_headers.encode("latin-1")),
                (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode()),
            ]
            status = 204
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def redact_query(query: str) -> str:
    """The query string with secret parameters (``token``) replaced by ``REDACTED``."""
    if not query or "token" not in query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, REDACTED if k in _SECRET_PARAMS else v) for k, v in pairs], safe="/:*")


class _Exchange:
    """One request as the access log sees it: a ``send`` that notes the status and counts body
    bytes, and when it started (a slotted object, not a closure with its cells: it lives as long
    as a held connection)."""

    __slots__ = ("log", "send", "sent", "started", "status")

    def __init__(self, log: AccessLogMiddleware, send: Send) -> None:
        self.log = log
        self.send = send
        self.started = time.monotonic()
        self.status = 0
        self.sent = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            self.sent += len(message.get("body", b""))
        elif message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)

    def request_ended(self, scope: Scope, *, failed: bool) -> None:
        if failed:
            self.status = self.status or 500  # the error page is sent outside this middleware
        self.sent += scope.get(LIVE_BYTES, 0)  # written by the fan-out, under this middleware
        self.log.record(scope, self.status, self.sent, time.monotonic() - self.started)


class AccessLogMiddleware:
    """One JSON line per request; also counts responses by status for ``/metrics``.

    On the short path of held streams (:mod:`ssegate._fast.stack`) the endpoint says when the
    request ended, so this layer is a plain function there and keeps no frame per connection.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, *, log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.log = log

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        exchange = _Exchange(self, send)
        if REQUEST_END in scope:
            scope[REQUEST_END] = exchange
            return self.app(scope, receive, exchange)
        return self._until_the_end(scope, receive, exchange)

    async def _until_the_end(self, scope: Scope, receive: Receive, exchange: _Exchange) -> None:
        failed = True
        try:
            await self.app(scope, receive, exchange)
            failed = False
        finally:
            exchange.request_ended(scope, failed=failed)

    def record(self, scope: Scope, status: int, sent: int, duration: float) -> None:
        """Count the response by status, and log it if the access log is on."""
        route = scope.get("route")
        # The route's template, never the path: a label per URL would be unbounded.
        self.metrics.response(getattr(route, "path", None) or UNMATCHED_ROUTE, scope["method"], status)
        if self.log and access_logger.isEnabledFor(logging.INFO):
            self._write(scope, status, sent, duration)

    @staticmethod
    def _write(scope: Scope, status: int, sent: int, duration: float) -> None:
        query = redact_query(scope.get("query_string", b"").decode("latin-1"))
        client = scope.get("client")
        record = {
            "method": scope["method"],
            "path": scope["path"] + (f"?{query}" if query else ""),
            "status": status,
            "duration_ms": round(duration * 1000, 1),
            "bytes": sent,
            "principal": scope.get(PRINCIPAL_SCOPE_KEY, "-"),
            "client": client[0] if client else None,
        }
        access_logger.info(json.dumps(record, separators=(",", ":")))
