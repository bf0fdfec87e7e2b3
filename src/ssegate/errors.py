"""Every exception ssegate raises, in one tree.

::

    SSEGateError
     ├── ProtocolError                  the bytes on the wire break the SSE rules
     │    ├── LocalProtocolError        (ValueError) we were asked to write something unencodable
     │    └── RemoteProtocolError       the peer sent something we cannot accept
     ├── ClientError                    the Python client could not (or may no longer) read a stream
     │    ├── HTTPStatusError           a non-2xx answer (other than the 204 "stream is over")
     │    └── NotAnEventStream          a 2xx answer that is not text/event-stream
     ├── LogError                       the event log refused or failed an operation
 │    ├── LogUnavailable            unreachable for longer than a producer may wait
     │    ├── StreamNotFound            no such stream in the log
     │    ├── StreamExists              create() of a stream that exists
     │    └── StreamClosed              append() after the terminal event
     └── RequestError                   an HTTP request to the server was wrong (carries status + code)

Each class carries ``status_code``: the HTTP status a server should answer with when the error
reaches the edge unhandled, so routes never invent one; and ``code``: the plain word a client
reads in the JSON error body (``log_unavailable``), never a class name.
"""

from __future__ import annotations

from typing import Any


class SSEGateError(Exception):
    """Base of every ssegate error."""

    status_code: int = 500
    code: str = "internal"


class ProtocolError(SSEGateError):
    """The SSE rules were broken, on one side or the other."""

    status_code = 400
    code = "protocol_error"


class LocalProtocolError(ProtocolError, ValueError):
    """The caller asked the encoder for something SSE cannot carry (e.g. a newline in an id)."""

    status_code = 500
    code = "unencodable"


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes we refuse to interpret."""

    status_code = 502
    code = "upstream_invalid"


class ClientError(SSEGateError):
    """The Python client could not read the stream it was asked to read."""


class HTTPStatusError(ClientError):
    """The server answered with a status that is not a stream (and not the end-of-stream 204)."""

    def __init__(self, status: int, body: str, url: str) -> None:
        super().__init__(f"{url} answered HTTP {status}: {body[:200]}")
        self.status = status
        self.body = body
        self.url = url


class NotAnEventStream(ClientError):
    """The server answered 2xx, but not with ``text/event-stream``."""

    def __init__(self, content_type: str, url: str) -> None:
        super().__init__(f"{url} answered with content-type {content_type!r}, not text/event-stream")
        self.content_type = content_type
        self.url = url


class LogError(SSEGateError):
    """The event log failed or refused an operation."""

    status_code = 503
    code = "log_unavailable"


class LogUnavailable(LogError):
    """The event log stayed unreachable for longer than a producer may wait (its outage limit)."""


class StreamNotFound(LogError):
    """The event log has no stream with that key."""

    status_code = 404
    code = "not_found"


class RequestError(SSEGateError):
    """A client request to the server is wrong; rendered as a JSON error body.

    ``code`` is a stable machine-readable word (``invalid_json``, ``not_found``, ...); the message
    says in words what was wrong.
    """

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}


class StreamExists(LogError):
    """``create`` was called for a stream that already exists."""

    status_code = 409
    code = "exists"


class StreamClosed(LogError):
    """An append to a stream whose terminal event has already been written."""

    status_code = 409
    code = "stream_closed"
