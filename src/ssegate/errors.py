"""Every exception ssegate raises, in one tree.

::

    SSEGateError
     ├── ProtocolError                  the bytes on the wire break the SSE rules
     │    ├── LocalProtocolError        (ValueError) we were asked to write something unencodable
     │    └── RemoteProtocolError       the peer sent something we cannot accept
     ├── ClientError                    the Python client could not (or may no longer) read a stream
     │    ├── HTTPStatusError           a non-2xx answer (other than the 204 "stream is over")
     │    └── NotAnEventStream          a 2xx answer that is not text/event-stream
     ├── CLIError                       the command line cannot do what it was asked
     │    ├── CommandError              a failure said in one line, exit status 1
     │    └── ConfigError               the CLI's config file cannot be used
     ├── LogError                       the event log refused or failed an operation
     │    ├── LogUnavailable            unreachable for longer than a producer may wait
     │    ├── StreamNotFound            no such stream in the log
     │    ├── StreamExists              create() of a stream that exists
     │    └── StreamClosed              append() after the terminal event
     ├── RequestError                   an HTTP request to the server was wrong (carries status + code)
     ├── TopicInputError                (ValueError) a topic, event type, key or value that cannot be used
     │    └── ReservedEventType         an event type ssegate gives a meaning of its own
     ├── InvalidToken                   a stream token that is malformed, forged or expired
     ├── ProviderError                  an LLM provider could not answer
     │    ├── UpstreamError             the upstream failed or refused (carries a stable code)
     │    │    └── ProducerError        an app's own producer ends its generation with an error
     │    └── ConfigurationError        a provider cannot run as configured (no API key, say)
     ├── SettingsError                  (ValueError) a setting (an SSEGATE_* variable) is malformed
     │    └── AuthConfigError           the API key configuration is malformed
     └── GapError                       a dialect's encoder met a gap in the log (it starts over)

Each class carries ``status_code``: the HTTP status a server should answer with when the error
reaches the edge unhandled, so routes never invent one; and ``code``: the plain word a client
reads in the JSON error body (``log_unavailable``), never a class name.

Misuse of the Python API (a wrong argument, a call out of order) raises Python's own
``ValueError``, ``TypeError`` or ``RuntimeError``, as the standard library does; other libraries'
exceptions (the SDKs', httpx's, Redis's) are caught where they cross into ssegate and become one
of these.
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


class CLIError(SSEGateError):
    """The command line (``ssegate ...``) cannot do what it was asked."""


class CommandError(CLIError):
    """A failure to report in one line (the message) with exit status 1."""


class ConfigError(CLIError):
    """The CLI's config file cannot be used; the message names the file and what is wrong."""


class TopicInputError(SSEGateError, ValueError):
    """A topic name, event type, key or value that cannot be published or subscribed to."""

    status_code = 422
    code = "invalid_topic_input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ReservedEventType(TopicInputError):
    """An event type that ssegate or its clients give a meaning of their own (400 over HTTP)."""


class InvalidToken(SSEGateError):
    """A stream token that is malformed, forged or expired; ``code`` says which."""

    status_code = 401

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ProviderError(SSEGateError):
    """An LLM provider could not answer."""


class UpstreamError(ProviderError):
    """The provider failed; ``code`` is one of the table in :mod:`ssegate.providers.base`."""

    status_code = 502

    def __init__(self, code: str, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.status = status


class ProducerError(UpstreamError):
    """An app's own producer ends its generation with ``error {code, message, retryable}``."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(code, message, retryable=retryable)


class ConfigurationError(ProviderError):
    """The provider cannot run as configured (e.g. no API key); answered as 400 at request time."""

    status_code = 400
    code = "provider_unavailable"


class SettingsError(SSEGateError, ValueError):
    """A setting is malformed (reported at start-up, never at request time)."""

    code = "invalid_setting"


class AuthConfigError(SettingsError):
    """The API key configuration is malformed (reported at start-up, never at request time)."""


class GapError(SSEGateError):
    """An entry arrived past the next one to encode (history trimmed): the encoder's state is lost."""

    def __init__(self, seq: int, expected: int) -> None:
        super().__init__(f"log entry {seq} arrived while {expected} was the next to encode")
