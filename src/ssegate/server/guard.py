"""The local-mode guard: a request another web site made a browser send is refused.

With no API keys (local mode) the server trusts whoever reaches it, and a browser will reach it on
behalf of any page it has open. Three checks keep that to the local user (see docs/security.md):

* ``Host`` must be an allowed name (loopback names by default in local mode): a page on
  ``evil.example`` that re-points its DNS name at 127.0.0.1 (DNS rebinding) still sends
  ``Host: evil.example``. Answered 421 ``host_not_allowed``.
* A state-changing request (POST, PUT, PATCH, DELETE) that names a ``Content-Type`` must name
  ``application/json``: a page can send ``text/plain`` or a form across sites without asking (a
  "simple" request, no CORS preflight), but not JSON. In local mode a body without any
  ``Content-Type`` is refused too. Answered 415 ``unsupported_media_type``.
* In local mode a state-changing request that carries an ``Origin`` must come from the server's
  own origin or a configured CORS origin. Answered 403 ``origin_not_allowed``.

Each answer is a JSON error, before any route runs.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from ssegate.server.auth import is_loopback

# What a loopback-bound server in local mode answers to, with any port.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_JSON = b"application/json"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def default_allowed_hosts(*, local: bool, bound_to: str) -> str | None:
    """What ``ssegate serve`` answers to when ``SSEGATE_ALLOWED_HOSTS`` is unset: loopback names
    for a server in local mode on a loopback address (a browser on this machine is its only
    client, and a DNS-rebinding page the threat), else any name (``None``): with API keys a
    rebinding page has no key, and a public server has names the process cannot know. An app
    built by ``create_app`` (tests, mounted in a host app) answers to any name unless told."""
    return ",".join(sorted(LOOPBACK_HOSTS)) if local and is_loopback(bound_to) else None


def parse_hosts(value: str | None) -> frozenset[str] | None:
    """``"a.example, *.b.example"`` -> the set (lower case, ports dropped); ``"*"`` -> ``None`` (any)."""
    if value is None:
        return None
    hosts = frozenset(_host_name(h.strip()) for h in value.split(",") if h.strip())
    return None if "*" in hosts else hosts


def _host_name(host: str) -> str:
    """The name of a ``Host`` value without its port: ``a.example:80`` -> ``a.example``;
    ``[::1]:8000`` -> ``[::1]``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.partition(":")[0] if host.count(":") == 1 else host


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    name = _host_name(host).rstrip(".")
    if name in allowed:
        return True
    return any(a.startswith("*.") and name.endswith(a[1:]) for a in allowed)


class LocalGuard:
    """ASGI middleware for the three checks above. ``hosts``: the allowed ``Host`` names (``None``:
    any); ``check_origin``: refuse cross-origin state-changing requests (local mode);
    ``origins``: the configured CORS origins, which may make them."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts: frozenset[str] | None,
        check_origin: bool,
        origins: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.check_origin = check_origin
        self.origins = frozenset(origins)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function handing over the next layer's coroutine: no frame on a held stream.
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        host = origin = content_type = None
        has_body = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                has_body = value.strip() not in (b"0", b"")
            elif name == b"transfer-encoding":
                has_body = True
        hosts = self.hosts
        if hosts is not None and host is not None and not host_allowed(host.decode("latin-1"), hosts):
            return _refuse(send, 421, "host_not_allowed", _host_message(host))
        if scope["method"] not in _STATE_CHANGING:
            return self.app(scope, receive, send)
        # A body with no Content-Type at all: a page's no-cors fetch of a Blob sends one, so local
        # mode refuses it; with API keys (no page has one) curl -d-style requests may omit it.
        if (content_type is not None or (has_body and self.check_origin)) and not _is_json(content_type):
            shown = "none" if content_type is None else repr(content_type.decode("latin-1"))
            return _refuse(
                send,
                415,
                "unsupported_media_type",
                f"send the body as Content-Type: application/json (got {shown})",
            )
        if self.check_origin and origin is not None and not self._same_or_allowed(origin, host):
            return _refuse(
                send,
                403,
                "origin_not_allowed",
                f"a page on {origin.decode('latin-1')!r} may not change anything here; "
                "allow it with SSEGATE_CORS_ORIGINS",
            )
        return self.app(scope, receive, send)

    def _same_or_allowed(self, origin: bytes, host: bytes | None) -> bool:
        text = origin.decode("latin-1").rstrip("/")
        if text in self.origins or "*" in self.origins:
            return True
        if host is None or text == "null":
            return False
        return same_origin(text, host.decode("latin-1"))


def same_origin(origin: str, host: str) -> bool:
    """Is ``origin`` (``scheme://name[:port]``) the server that ``Host`` names? Names must match;
    ports too when ``Host`` has one (a proxy's ``Host: $host`` drops it, so then the name decides)."""
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a malformed port
        return False
    name = _host_name(host)
    if (parts.hostname or "") != name.strip("[]").rstrip("."):
        return False
    _, colon, port = host.strip().rpartition(":")
    if not colon or port.endswith("]") or not port.isdigit():
        return True  # no port in Host
    return origin_port == int(port)


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    return content_type.partition(b";")[0].strip().lower() == _JSON


def _host_message(host: bytes) -> str:
    return (
        f"this server does not answer to Host {host.decode('latin-1')[:100]!r}; "
        "add it to SSEGATE_ALLOWED_HOSTS (ssegate serve --allowed-hosts)"
    )


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
