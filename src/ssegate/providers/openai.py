"""OpenAI and OpenAI-compatible servers (vLLM, Ollama, llama.cpp, LM Studio) through the ``openai`` SDK.

Chat Completions streaming with ``stream_options.include_usage``. As with Anthropic, the SDK makes
the request and maps status errors, and the body's ``chat.completion.chunk`` lines are read raw.
"""

from __future__ import annotations

from typing import Any

import openai
import orjson

from ssegate.codec.events import Event
from ssegate.codec.parser import EventStreamParser
from ssegate.providers import openai_request
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
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UpstreamError,
    Usage,
)
from ssegate.text import loads_upstream

DEFAULT_MODEL = "gpt-4o-mini"
_DONE = "[DONE]"
# See anthropic.py: the SDK timeout only matters before the first byte.
_SDK_TIMEOUT_MARGIN = 1.0
# OpenAI's finish reasons in the normalised vocabulary; the others (stop, length, ...) are the same.
_FINISH_REASONS = {"tool_calls": "tool_use", "function_call": "tool_use"}
# Error types (or codes) seen in mid-stream error chunks that mean "try again later".
_STREAM_ERROR_CODES = {
    "rate_limit_exceeded": ("rate_limited", True),
    "rate_limit_error": ("rate_limited", True),
    "overloaded_error": ("upstream_overloaded", True),
    "server_error": ("upstream_unavailable", True),
}


_PLACEHOLDER_KEY = "not-needed"


class OpenAIProvider(AnswerAdapter):
    """Streams one Chat Completions call per request; ``aclose`` releases the HTTP client."""

    def __init__(self, config: ProviderConfig) -> None:
        """``config``: its ``openai_*`` fields and the upstream ones (ssegate.providers.base)."""
        self.info = ProviderInfo(name="openai", default_model=config.openai_model or DEFAULT_MODEL)
        idle_timeout = self._idle_timeout = config.idle_timeout
        self._client = openai.AsyncOpenAI(
            # Local OpenAI-compatible servers ignore the key, but the SDK refuses to start without one.
            api_key=config.openai_api_key or _PLACEHOLDER_KEY,
            base_url=config.openai_base_url,
            max_retries=config.max_retries,
            timeout=idle_timeout + _SDK_TIMEOUT_MARGIN,
            # The SDK's aiohttp transport: cheaper per streamed chunk (see the anthropic provider).
            http_client=openai.DefaultAioHttpClient(
                timeout=idle_timeout + _SDK_TIMEOUT_MARGIN,
                limits=connection_limits(openai.DEFAULT_CONNECTION_LIMITS, config.max_connections),
            ),
        )

        # A call's first attempt goes out directly with the SDK's own prepared request (see
        # _direct); the SDK's method asks for bearer auth in the request's options.
        self._call = StreamingCall(
            self._client,
            lambda client: client.chat.completions.with_streaming_response.create,
            "/chat/completions",
            openai,
            spans=False,
            spares=config.spare_connections,
            first_byte_timeout=config.first_byte_timeout,
            options={"security": {"bearer_auth": True}},
        )

    async def aclose(self) -> None:
        await self._call.aclose()
        await self._client.close()

    def check(self, request: GenerationRequest) -> None:
        openai_request.check(request)

    async def _open(self, request: GenerationRequest) -> tuple[Any, Any]:
        """Send the request; ``(context, response)`` once the answer's head is in."""
        body = openai_request.body(request, request.model or self.info.default_model)
        try:
            context, response = await self._call.open(body, **body)
        except openai.APIStatusError as exc:
            raise error_for_status(exc.status_code, error_body_summary(exc.body, str(exc))[1]) from exc
        except openai.APITimeoutError as exc:
            raise start_timeout_error(exc, self._idle_timeout) from exc
        except openai.APIConnectionError as exc:
            raise unavailable_error(str(exc)) from exc
        return context, response

    def _answer(self) -> _Answer:
        return _Answer()


class _Answer:
    """One streamed answer's body (see :mod:`ssegate.providers.answer`): ``chat.completion.chunk``
    lines in, provider events out, ``done`` after ``[DONE]``. Remembers the open tool calls by
    their index: OpenAI names a call (id, function name) in its first delta only, and several
    calls of one answer interleave their argument pieces."""

    __slots__ = ("done", "finish_reason", "model", "parser", "tool_ids")

    def __init__(self) -> None:
        self.parser = EventStreamParser()
        self.done = False
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.tool_ids: dict[int, str] = {}  # tool call index -> id, while the call is open

    def feed(self, chunk: bytes, emit: Emit) -> None:
        for item in self.parser.feed(chunk):
            if type(item) is not Event:
                continue
            if item.data == _DONE:
                if self.finish_reason is None:
                    raise disconnected_error("[DONE] before a finish_reason")
                self.done = True
                emit(self._finished())
                return
            try:
                data = orjson.loads(item.data)
            except orjson.JSONDecodeError:  # a lone surrogate, say: the tolerant path scrubs it
                data = loads_upstream(item.data)
            self._chunk(data, emit)

    def end(self, emit: Emit) -> None:
        """The body ended without ``[DONE]``: complete if a finish reason came (some servers omit
        the marker), else a dropped stream."""
        if self.finish_reason is None:
            raise disconnected_error("the body ended without a finish_reason")
        self.done = True
        emit(self._finished())

    def _finished(self) -> Finished:
        return Finished(self.finish_reason or "stop", self.model)

    def _chunk(self, data: dict[str, Any], emit: Emit) -> None:
        if data.get("error"):
            raise _stream_error(data["error"])
        if self.model is None and data.get("model"):
            self.model = data["model"]
            emit(ModelInfo(data["model"]))
        for choice in data.get("choices") or ():
            if choice.get("index", 0) == 0:  # n=1: other choices are never asked for
                self._choice(choice, emit)
        usage = data.get("usage")
        if usage:
            emit(Usage(usage.get("prompt_tokens"), usage.get("completion_tokens")))

    def _choice(self, choice: dict[str, Any], emit: Emit) -> None:
        delta = choice.get("delta") or {}
        # vLLM and DeepSeek say reasoning_content; Ollama and OpenRouter say reasoning.
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            emit(ThinkingDelta(reasoning))
        content = delta.get("content")
        if content:
            emit(TextDelta(content))
        for call in delta.get("tool_calls") or ():
            self._tool_call(call, emit)
        reason = choice.get("finish_reason")
        if reason:
            self.finish_reason = _FINISH_REASONS.get(reason, reason)
            for tool_id in self.tool_ids.values():
                emit(ToolCallEnd(tool_id))
            self.tool_ids.clear()

    def _tool_call(self, call: dict[str, Any], emit: Emit) -> None:
        index = call.get("index", 0)
        function = call.get("function") or {}
        tool_id = self.tool_ids.get(index)
        if tool_id is None:
            tool_id = call.get("id") or f"call_{index}"
            self.tool_ids[index] = tool_id
            emit(ToolCallStart(tool_id, function.get("name") or "", index))
        arguments = function.get("arguments")
        if arguments:
            emit(ToolCallDelta(tool_id, arguments))


def _stream_error(error: object) -> UpstreamError:
    kind, message = error_body_summary(error, "the upstream reported an error mid-stream")
    code, retryable = _STREAM_ERROR_CODES.get(kind or "", ("upstream_error", False))
    return UpstreamError(code, message, retryable=retryable)
