"""Shortcut ``live_socket``: the socket under a uvicorn httptools response, for the live fan-out.

Relies on: the ``send`` uvicorn's httptools protocol hands the app being a bound method of its
request-response cycle, whose ``chunked_encoding``, ``disconnected`` and ``transport`` say whether
a chunk written straight to the transport is what uvicorn would have written itself, and whose
``message_event`` is what its ``receive`` waits on. Anything
else (another server or protocol, a response that is not chunked, a closed one) answers ``None``,
and its viewers read the log on their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeGuard, runtime_checkable

__all__ = ["Transport", "socket_under"]

_HTTPTOOLS = "uvicorn.protocols.http.httptools_impl"


@runtime_checkable
class Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...


def socket_under(server_send: Any) -> tuple[Transport, Callable[[], None]] | None:
    """The transport under ``server_send`` (the server's own ``send``), if a chunk written to it is
    what uvicorn would write for a body message, and how to wake the app's wait in ``receive``
    (setting the request's message event, which uvicorn's ``receive`` waits on: it then answers
    an empty ``http.request``, or ``http.disconnect`` if the client left); else ``None``."""
    cycle: Any = getattr(server_send, "__self__", None)
    if type(cycle).__module__ != _HTTPTOOLS:
        return None
    if getattr(cycle, "chunked_encoding", None) is not True or getattr(cycle, "disconnected", True):
        return None
    transport = getattr(cycle, "transport", None)
    event = getattr(cycle, "message_event", None)
    wake = getattr(event, "set", None)
    if not _is_transport(transport) or not callable(wake):
        return None
    return transport, wake


# Duck-typed (uvloop's transports are not asyncio.WriteTransport subclasses), and answered once
# per class: isinstance() against a runtime-checkable Protocol walks its members on every call.
_transport_classes: dict[type, bool] = {}


def _is_transport(obj: object) -> TypeGuard[Transport]:
    cls = type(obj)
    known = _transport_classes.get(cls)
    if known is None:
        known = _transport_classes[cls] = isinstance(obj, Transport)
    return known
