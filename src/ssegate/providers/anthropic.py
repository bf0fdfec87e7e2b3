"""Claude through the official ``anthropic`` SDK (Messages API, streaming).

The SDK sends the request and owns auth, headers, retries and status-error mapping; the body's
server-sent events are parsed by ssegate's own codec and mapped from plain dicts, which costs a
fraction of the SDK's typed event models on the per-token path.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from typing import Any, Literal

import anthropic
import orjson
from opentelemetry import trace

from ssegate.codec.events import Event
from ssegate.codec.parser import EventStreamParser
from ssegate.providers import anthropic_request
from ssegate.providers._direct import StreamingCall
from ssegate.providers._upstream import (
    BodyPush,
    ChunkHandler,
    EndHandler,
    IdleReader,
    SSEAdapter,
    body_reader,
    connection_limits,
    disconnected_error,
    error_body_summary,
    error_for_status,
    start_timeout_error,
    unavailable_error,
)
from ssegate.providers.base import (
    DEFAULT_MAX_CONNECTIONS,
    Deliver,
    Finished,
    GenerationRequest,
    ModelInfo,
    ProviderEvent,
    ProviderInfo,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UpstreamError,
    Usage,
)

DEFAULT_MODEL = "claude-sonnet-5-5"
# Anthropic's stop reasons in the normalised vocabulary; others (stop_sequence, refusal, ...) pass as-is.
_FINISH_REASONS = {"end_turn": "stop", "max_tokens": "length"}
# Error event types that mean "try again later", with the code each becomes.
_STREAM_ERROR_CODES = {
    "overloaded_error": ("upstream_overloaded", True),
    "rate_limit_error": ("rate_limited", True),
    "api_error": ("upstream_unavailable", True),
    "authentication_error": ("upstream_auth", False),
    "permission_error": ("upstream_auth", False),
    "invalid_request_error": ("upstream_bad_request", False),
}
# The SDK's own read timeout is a safety net before the first byte; during the body the idle
# reader fires first, so it is a little longer than the idle timeout.
_SDK_TIMEOUT_MARGIN = 1.0


class AnthropicProvider(SSEAdapter):
    """Streams one Messages API call per request; ``aclose`` releases the HTTP client."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str | None = None,
        max_retries: int = 2,
        idle_timeout: float = 30.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        spare_connections: int = 1,
    ) -> None:
        self.info = ProviderInfo(name="anthropic", default_model=model or DEFAULT_MODEL)
        self._idle_timeout = idle_timeout
        spans = sdk_spans_option()
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=idle_timeout + _SDK_TIMEOUT_MARGIN,
            open_telemetry=spans,
            # The SDK's aiohttp transport: per streamed chunk it costs about half of the default
            # httpx/httpcore/anyio stack (measured with py-spy under bench W4).
            http_client=anthropic.DefaultAioHttpClient(
                timeout=idle_timeout + _SDK_TIMEOUT_MARGIN,
                limits=connection_limits(anthropic.DEFAULT_CONNECTION_LIMITS, max_connections),
            ),
        )

        # A call's first attempt goes out directly with the SDK's own prepared request; the SDK
        # makes the calls that attempt hands back (see _direct).
        self._call = StreamingCall(
            self._client,
            lambda client: client.messages.with_streaming_response.create,
            "/v1/messages",
            anthropic,
            spans=spans is not False,
            spares=spare_connections,
        )

    async def aclose(self) -> None:
        await self._call.aclose()
        await self._client.close()

    def _push_handlers(self, push: BodyPush, deliver: Deliver) -> tuple[ChunkHandler, EndHandler]:
        parser = EventStreamParser()
        mapper = _EventMapper()

        def handle(chunk: bytes) -> None:
            if parser.at_event_boundary() and len(chunk) <= parser.max_event_size:
                text = text_delta(chunk)
                if text is not None:
                    deliver(TextDelta(text))
                    return
            for item in parser.feed(chunk):
                if type(item) is Event:
                    for event in mapper.map(item):
                        deliver(event)
                    if mapper.finished:
                        push.finish()
                        return

        def at_end() -> None:
            raise disconnected_error("the body ended without message_stop")

        return handle, at_end

    def check(self, request: GenerationRequest) -> None:
        anthropic_request.check(request)

    async def _open(self, request: GenerationRequest) -> tuple[Any, Any]:
        """Send the request; ``(context, response)`` once the answer's head is in."""
        body = anthropic_request.body(request, request.model or self.info.default_model)
        try:
            context, response = await self._call.open(body, **body)
        except anthropic.APIStatusError as exc:
            raise _status_error(exc) from exc
        except anthropic.APITimeoutError as exc:
            raise start_timeout_error(exc, self._idle_timeout) from exc
        except anthropic.APIConnectionError as exc:
            raise unavailable_error(str(exc)) from exc
        return context, response

    async def _pull(self, response: Any) -> AsyncGenerator[ProviderEvent, None]:
        """The answer's events, read by this task chunk by chunk."""
        parser = EventStreamParser()
        mapper = _EventMapper()
        reader = IdleReader(body_reader(response.http_response), self._idle_timeout)
        try:
            while True:
                try:
                    chunk = await reader.next()
                except UpstreamError:
                    raise
                except Exception as exc:  # the transport broke: a reset or a truncated chunked body
                    raise disconnected_error(f"{type(exc).__name__}: {exc}") from exc
                if chunk is None:
                    raise disconnected_error("the body ended without message_stop")
                for item in parser.feed(chunk):
                    if type(item) is Event:
                        for event in mapper.map(item):
                            yield event
                        if mapper.finished:
                            return
        finally:
            reader.close()


_TEXT_DELTA_HEAD = b"event: content_block_delta\ndata: "


def text_delta(chunk: bytes) -> str | None:
    """The text of a chunk that is one ``text_delta`` event and nothing else (how Anthropic sends
    each token), else ``None``. The same text the parser and :class:`_EventMapper` would give, for
    a fraction of their calls: a relayed token's most frequent shape (bench W4)."""
    head = len(_TEXT_DELTA_HEAD)
    if (
        not chunk.startswith(_TEXT_DELTA_HEAD)
        or chunk.find(b"\n", head) != len(chunk) - 2
        or not chunk.endswith(b"\n\n")
        or b"\r" in chunk
    ):
        return None
    try:
        data = orjson.loads(chunk[head:-2])
    except orjson.JSONDecodeError:
        return None  # invalid UTF-8, say: the parser's rules (replacement characters) apply
    delta = data.get("delta") if type(data) is dict else None
    if type(delta) is not dict or delta.get("type") != "text_delta":
        return None
    text = delta.get("text")
    return text if type(text) is str else None


def sdk_spans_option() -> Literal[False] | None:
    """The SDK's ``open_telemetry`` option: its spans off when nothing would record them.

    With no tracer provider configured, the SDK still builds each call's span and its attributes,
    then drops it: about 5 % of the CPU a generation's start costs (callgrind). Nothing changes on
    the wire (a span nobody records propagates no trace context). A configured provider (such as
    ``opentelemetry-instrument ssegate serve`` sets up) or an explicit ``ANTHROPIC_OPEN_TELEMETRY``
    leaves the option to the SDK.
    """
    if "ANTHROPIC_OPEN_TELEMETRY" in os.environ:
        return None
    return False if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider) else None


class _EventMapper:
    """Turns Anthropic's named events (as dicts) into provider events; remembers what spans events."""

    __slots__ = ("finish_reason", "finished", "input_tokens", "model", "tool_ids")

    def __init__(self) -> None:
        self.finished = False
        self.finish_reason = "stop"
        self.model: str | None = None
        self.input_tokens: int | None = None
        self.tool_ids: dict[int, str] = {}  # content block index -> tool_use id

    def map(self, sse: Event) -> list[ProviderEvent]:
        kind = sse.event
        if kind == "ping":
            return []
        data: dict[str, Any] = orjson.loads(sse.data)
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_stop":
            tool_id = self.tool_ids.pop(data.get("index", 0), None)
            return [ToolCallEnd(tool_id)] if tool_id is not None else []
        if kind == "message_start":
            return self._message_start(data["message"])
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "message_stop":
            self.finished = True
            return [Finished(self.finish_reason, self.model)]
        if kind == "error":
            raise _stream_error(data.get("error") or {})
        return []  # new event types may appear (Anthropic's versioning policy): ignore them

    def _delta(self, data: dict[str, Any]) -> list[ProviderEvent]:
        delta = data["delta"]
        kind = delta["type"]
        if kind == "text_delta":
            return [TextDelta(delta["text"])]
        if kind == "thinking_delta":
            return [ThinkingDelta(delta["thinking"])]
        if kind == "input_json_delta":
            tool_id = self.tool_ids.get(data.get("index", 0))
            partial = delta.get("partial_json", "")
            return [ToolCallDelta(tool_id, partial)] if tool_id is not None and partial else []
        return []  # signature_delta, citations_delta: nothing a viewer reads

    def _block_start(self, data: dict[str, Any]) -> list[ProviderEvent]:
        block = data["content_block"]
        index = data.get("index", 0)
        kind = block.get("type")
        if kind == "tool_use":
            self.tool_ids[index] = block["id"]
            return [ToolCallStart(block["id"], block["name"], index)]
        if kind == "text" and block.get("text"):
            return [TextDelta(block["text"])]
        if kind == "thinking" and block.get("thinking"):
            return [ThinkingDelta(block["thinking"])]
        return []

    def _message_start(self, message: dict[str, Any]) -> list[ProviderEvent]:
        self.model = message.get("model")
        usage = message.get("usage") or {}
        self.input_tokens = usage.get("input_tokens")
        events: list[ProviderEvent] = []
        if self.model:
            events.append(ModelInfo(self.model))
        if self.input_tokens is not None:
            events.append(Usage(self.input_tokens, usage.get("output_tokens")))
        return events

    def _message_delta(self, data: dict[str, Any]) -> list[ProviderEvent]:
        stop_reason = (data.get("delta") or {}).get("stop_reason")
        if stop_reason:
            self.finish_reason = _FINISH_REASONS.get(stop_reason, stop_reason)
        usage = data.get("usage") or {}
        if "output_tokens" not in usage:
            return []
        # message_delta usage is cumulative; input tokens may be restated there too.
        return [Usage(usage.get("input_tokens") or self.input_tokens, usage["output_tokens"])]


def _stream_error(error: dict[str, Any]) -> UpstreamError:
    kind = str(error.get("type", "error"))
    message = str(error.get("message", kind))
    code, retryable = _STREAM_ERROR_CODES.get(kind, ("upstream_error", False))
    return UpstreamError(code, f"{kind}: {message}", retryable=retryable)


def _status_error(exc: anthropic.APIStatusError) -> UpstreamError:
    kind, message = error_body_summary(exc.body, str(exc))
    if kind == "overloaded_error":  # 529, but a proxy may rewrite the status to 503
        return UpstreamError("upstream_overloaded", message, retryable=True, status=exc.status_code)
    return error_for_status(exc.status_code, message)
