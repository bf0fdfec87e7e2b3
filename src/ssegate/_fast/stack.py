"""Shortcuts ``held_streams`` and ``served_app``: a held connection is mostly its call stack.

Relies on: Starlette's routing (``Route.matches`` fills the scope as its router would) and its
exception-handler lookup, done again here the way Starlette does it (``held_streams``); and
uvicorn's proxy-headers middleware rewriting the scope without suspending (``served_app``).

A subscriber can stay connected for hours, and for all that time every frame on its path stays
alive: Starlette's error middleware, exception middleware, router, route and request wrapper come
to about 5 KiB per connection (tracemalloc, bench W3), a quarter of what an idle subscriber costs.
So the event-stream routes (``GET`` a stream, and the ``POST`` that starts a generation and usually
streams it) go through our own middleware (access log, CORS) straight to the endpoint, which this
module calls with the app's exception handlers in one frame; the access log, which must see the
request end, is told so by that frame instead of keeping one of its own (:data:`REQUEST_END`).
Every other request takes Starlette's full stack. Both paths answer alike: same handlers, same
JSON errors, same headers. The short path also costs less CPU per request: starting a generation
skips four layers and their ``send`` wrappers.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ssegate.server.middleware import REQUEST_END, RequestEnd

Endpoint = Callable[[Request], Awaitable[Any]]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]
Dispatch = Callable[[Scope, Receive, Send], Awaitable[None]]


class HeldStreams:
    """Calls a matching stream route's endpoint directly; anything else goes to ``app``.

    ``__call__`` is a plain function returning the next layer's coroutine, so this layer keeps no
    frame of its own on a held connection.
    """

    def __init__(
        self,
        app: ASGIApp,
        stream: ASGIApp,
        routes: Sequence[Route],
    ) -> None:
        self.app = app
        self.stream = stream
        self.routes = routes

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A route matches fully only for its own methods; HEAD (which Starlette adds to every GET
        # route) keeps the full path, which answers it without a body.
        if scope["type"] == "http" and scope["method"] != "HEAD":
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope["route"] = route  # as Starlette's router does (metrics label by it)
                    scope.update(child_scope)
                    scope[REQUEST_END] = None  # nobody to tell yet
                    return self.stream(scope, receive, send)
        return self.app(scope, receive, send)


class StreamEndpoint:
    """The innermost layer of the short path: the route's endpoint, its errors answered by the
    app's handlers (looked up along the exception's class hierarchy, as Starlette does); at the
    end it calls the scope's :data:`REQUEST_END`, if a layer above put one there."""

    def __init__(self, handlers: Mapping[type[Exception], ErrorHandler]) -> None:
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        endpoint: Endpoint = scope["endpoint"]
        try:
            try:
                response = await endpoint(request)
            except Exception as exc:
                response = await self._handler(exc)(request, exc)
            del request  # the response needs none of it, and the stream may be held for hours
            # Errors from here on happen after the response started: nothing can be answered any
            # more, so they go to the server, which closes the connection (as under Starlette).
            await response(scope, receive, send)
        except BaseException:
            _report_end(scope, failed=True)
            raise
        _report_end(scope, failed=False)

    def _handler(self, exc: Exception) -> ErrorHandler:
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler
        raise exc  # not an Exception subclass the app handles (cannot happen: Exception is mapped)


def _report_end(scope: Scope, *, failed: bool) -> None:
    end: RequestEnd | None = scope.get(REQUEST_END)
    if end is not None:
        end.request_ended(scope, failed=failed)


class ServedApp:
    """An app as ``ssegate serve`` hands it to uvicorn: its outermost layers as plain functions.

    Under stock settings uvicorn wraps the app in its proxy-headers middleware, and Starlette's
    ``__call__`` is a coroutine too; both stay on the call stack of every held connection, about
    0.55 KiB of an idle subscriber (bench W3). Here uvicorn's proxy-headers middleware still does
    the rewriting (trusting ``FORWARDED_ALLOW_IPS``, default 127.0.0.1, as uvicorn does), but it
    runs to its end before the app's own first coroutine starts: uvicorn runs with
    :data:`UVICORN_OPTIONS`. ``dispatch``: the app's ``__call__`` as a plain function.
    """

    def __init__(self, dispatch: Dispatch, *, forwarded_allow_ips: str | None = None) -> None:
        self.dispatch = dispatch
        trusted = forwarded_allow_ips or os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
        self._forwarded = ProxyHeadersMiddleware(_answered, trusted_hosts=trusted)  # type: ignore[arg-type]

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "lifespan":
            rewrite = self._forwarded(scope, receive, send)  # type: ignore[arg-type]
            try:
                rewrite.send(None)
            except StopIteration:
                pass  # it rewrote the scope and called _answered: the usual, and only, way
            else:  # pragma: no cover - only if a uvicorn release made it wait on something
                rewrite.close()
                raise RuntimeError("uvicorn's proxy-headers middleware suspended")
        return self.dispatch(scope, receive, send)


async def _answered(scope: Scope, receive: Receive, send: Send) -> None:
    """The proxy-headers middleware's inner app: nothing, so it completes without suspending."""


# How uvicorn is configured for a ServedApp: the ServedApp applies the proxy headers itself.
UVICORN_OPTIONS: dict[str, Any] = {"interface": "asgi3", "proxy_headers": False}
