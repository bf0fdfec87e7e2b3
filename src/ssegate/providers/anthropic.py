"""Claude through the official ``anthropic`` SDK (Messages API, streaming).

The SDK sends the request and owns auth, headers, retries and status-error mapping; the body's
server-sent events are parsed by ssegate's own codec and mapped from plain dicts, which costs a
fraction of the SDK's typed event models on the per-token path.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import anthropic
import orjson
from opentelemetry import trace

from ssegate.codec.events import Event
from ssegate.codec.parser import EventStreamParser
from ssegate.providers import anthropic_request
from ssegate.providers._direct import StreamingCall
from ssegate.providers._upstream import (
    connection_limits,
    disconnected_error,
    error_body_summary,
    error_for_status,
    start_timeout_error,
    unavailable_error,
)
from ssegate.providers.answer import AnswerAdapter, Emit
from ssegate.providers.base import (
    Finished,
    GenerationRequest,
    ModelInfo,
    ProviderConfig,
    ProviderInfo,
    RedactedThinking,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UpstreamError,
    Usage,
)
from ssegate.text import loads_upstream

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
# The SDK's own read timeout is a safety net only: before the response head, each attempt's
# first-byte timeout (_direct) fires first; during the body the idle reader does, so it is a
# little longer than the idle timeout.
_SDK_TIMEOUT_MARGIN = 1.0


class AnthropicProvider(AnswerAdapter):
    """Streams one Messages API call per request; ``aclose`` releases the HTTP client."""

    def __init__(self, config: ProviderConfig) -> None:
        """``config``: its ``anthropic_*`` fields and the upstream ones (ssegate.providers.base)."""
        self.info = ProviderInfo(name="anthropic", default_model=config.anthropic_model or DEFAULT_MODEL)
        idle_timeout = self._idle_timeout = config.idle_timeout
        spans = sdk_spans_option()
        self._client = anthropic.AsyncAnthropic(
            api_key=config.anthropic_api_key,
            base_url=config.anthropic_base_url,
            max_retries=config.max_retries,
            timeout=idle_timeout + _SDK_TIMEOUT_MARGIN,
            open_telemetry=spans,
            # The SDK's aiohttp transport: per streamed chunk it costs about half of the default
            # httpx/httpcore/anyio stack (measured with py-spy under bench W4).
            http_client=anthropic.DefaultAioHttpClient(
                timeout=idle_timeout + _SDK_TIMEOUT_MARGIN,
                limits=connection_limits(anthropic.DEFAULT_CONNECTION_LIMITS, config.max_connections),
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
            spares=config.spare_connections,
            first_byte_timeout=config.first_byte_timeout,
        )

    async def aclose(self) -> None:
        await self._call.aclose()
        await self._client.close()

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

    def _answer(self) -> _Answer:
        return _Answer()


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


class _Answer:
    """One streamed answer's body (see :mod:`ssegate.providers.answer`): Anthropic's named events
    in, provider events out, ``done`` at ``message_stop``. Remembers what spans events: the model
    and input tokens from ``message_start``, the stop reason from ``message_delta``, and which
    content block index is which tool call (``input_json_delta`` names only the index)."""

    __slots__ = ("done", "finish_reason", "input_tokens", "model", "parser", "tool_count", "tool_ids")

    def __init__(self) -> None:
        self.parser = EventStreamParser()
        self.done = False
        self.finish_reason = "stop"
        self.model: str | None = None
        self.input_tokens: int | None = None
        self.tool_ids: dict[int, str] = {}  # content block index -> tool_use id, while open
        self.tool_count = 0

    def feed(self, chunk: bytes, emit: Emit) -> None:
        parser = self.parser
        if parser.at_event_boundary() and len(chunk) <= parser.max_event_size:
            text = text_delta(chunk)  # a token: most chunks, read without the parser
            if text is not None:
                emit(TextDelta(text))
                return
        for item in parser.feed(chunk):
            if type(item) is Event:
                self.event(item, emit)
                if self.done:
                    return

    def end(self, emit: Emit) -> None:
        raise disconnected_error("the body ended without message_stop")

    def event(self, sse: Event, emit: Emit) -> None:
        kind = sse.event
        if kind == "ping":
            return
        try:
            data: dict[str, Any] = orjson.loads(sse.data)
        except orjson.JSONDecodeError:  # a lone surrogate, say: the tolerant path scrubs it
            data = loads_upstream(sse.data)
        if kind == "content_block_delta":
            self._delta(data, emit)
        elif kind == "content_block_start":
            self._block_start(data, emit)
        elif kind == "content_block_stop":
            tool_id = self.tool_ids.pop(data.get("index", 0), None)
            if tool_id is not None:
                emit(ToolCallEnd(tool_id))
        elif kind == "message_start":
            self._message_start(data["message"], emit)
        elif kind == "message_delta":
            self._message_delta(data, emit)
        elif kind == "message_stop":
            self.done = True
            emit(Finished(self.finish_reason, self.model))
        elif kind == "error":
            raise _stream_error(data.get("error") or {})
        # Other event types may appear (Anthropic's versioning policy): ignored.

    def _delta(self, data: dict[str, Any], emit: Emit) -> None:
        delta = data["delta"]
        kind = delta["type"]
        if kind == "text_delta":
            emit(TextDelta(delta["text"]))
        elif kind == "thinking_delta":
            emit(ThinkingDelta(delta["thinking"]))
        elif kind == "input_json_delta":
            tool_id = self.tool_ids.get(data.get("index", 0))
            partial = delta.get("partial_json", "")
            if tool_id is not None and partial:
                emit(ToolCallDelta(tool_id, partial))
        elif kind == "signature_delta" and delta.get("signature"):
            emit(ThinkingSignature(delta["signature"]))
        # citations_delta: nothing a viewer reads

    def _block_start(self, data: dict[str, Any], emit: Emit) -> None:
        block = data["content_block"]
        index = data.get("index", 0)
        kind = block.get("type")
        if kind == "tool_use":
            self.tool_ids[index] = block["id"]
            # Numbered among the answer's tool calls (as OpenAI numbers them), not among its blocks.
            emit(ToolCallStart(block["id"], block["name"], self.tool_count))
            self.tool_count += 1
        elif kind == "text" and block.get("text"):
            emit(TextDelta(block["text"]))
        elif kind == "thinking" and block.get("thinking"):
            emit(ThinkingDelta(block["thinking"]))
        elif kind == "redacted_thinking" and block.get("data"):
            emit(RedactedThinking(block["data"]))

    def _message_start(self, message: dict[str, Any], emit: Emit) -> None:
        self.model = message.get("model")
        usage = message.get("usage") or {}
        self.input_tokens = usage.get("input_tokens")
        if self.model:
            emit(ModelInfo(self.model))
        if self.input_tokens is not None:
            emit(Usage(self.input_tokens, usage.get("output_tokens")))

    def _message_delta(self, data: dict[str, Any], emit: Emit) -> None:
        stop_reason = (data.get("delta") or {}).get("stop_reason")
        if stop_reason:
            self.finish_reason = _FINISH_REASONS.get(stop_reason, stop_reason)
        usage = data.get("usage") or {}
        if "output_tokens" in usage:
            # message_delta usage is cumulative; input tokens may be restated there too.
            emit(Usage(usage.get("input_tokens") or self.input_tokens, usage["output_tokens"]))


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
