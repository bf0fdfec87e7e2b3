"""Both vendors' adapters in one suite: what they stream (text, model, usage, thinking, tool calls,
the finish), how each upstream error maps to a code, failures of the upstream's transport, closing
the upstream when the consumer leaves, bodies split and compressed. Each test runs for Anthropic and
OpenAI (the real SDKs, against fakes speaking each wire format), pulled and pushed; what differs
between the vendors (their wire words, the usage they report, their error statuses) is in
:data:`CASES`. The few tests of one vendor's own behaviour come last. Tool loops are in
test_tool_use.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import anthropic
import pytest
from opentelemetry import trace

from ssegate import _fast
from ssegate.providers import ProviderConfig, build_provider
from ssegate.providers._upstream import body_reader
from ssegate.providers.anthropic import AnthropicProvider
from ssegate.providers.base import (
    Finished,
    ModelInfo,
    Provider,
    ProviderEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tests.fakes._http import FakeRequest
from tests.fakes._upstream import FakeUpstream, Faults
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic, ToolUse
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript, ToolCall
from tests.providers.helpers import answers_in_a_row, ask, collect, of_type, open_stream, text_of
from tests.support.servers import free_port

pytestmark = pytest.mark.usefixtures("reading")

VENDORS = ["anthropic", "openai"]
Build = Callable[..., Provider]


ANTHROPIC_KEY = "sk-ant-test-key"
OPENAI_KEY = "sk-test-key"


def config(vendor: str, url: str, *, idle_timeout: float = 30.0, max_retries: int = 0) -> ProviderConfig:
    common: dict[str, Any] = {"idle_timeout": idle_timeout, "max_retries": max_retries}
    if vendor == "anthropic":
        return ProviderConfig(anthropic_api_key=ANTHROPIC_KEY, anthropic_base_url=url, **common)
    return ProviderConfig(openai_api_key=OPENAI_KEY, openai_base_url=f"{url}/v1", **common)


def script(fake: FakeUpstream[Any], **fields: Any) -> Any:
    return AnthropicScript(**fields) if isinstance(fake, FakeAnthropic) else OpenAIScript(**fields)


def vendor_of(fake: FakeUpstream[Any]) -> str:
    return "anthropic" if isinstance(fake, FakeAnthropic) else "openai"


@pytest.fixture(params=VENDORS)
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeUpstream[Any]]:
    upstream: FakeUpstream[Any] = FakeAnthropic() if request.param == "anthropic" else FakeOpenAI()
    async with upstream:
        yield upstream


@pytest.fixture
async def build(fake: FakeUpstream[Any]) -> AsyncIterator[Build]:
    """Providers for the fake (``idle_timeout``, ``max_retries``), each closed at the end."""
    built: list[Provider] = []

    def make(**options: Any) -> Provider:
        provider = build_provider(vendor_of(fake), config(vendor_of(fake), fake.url, **options))
        built.append(provider)
        return provider

    yield make
    for provider in built:
        await provider.aclose()


# With a retry, the refused first attempt (sent directly, see providers._direct) is retried by the SDK.
@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("retries", [0, 1])
async def test_connection_refused_is_unavailable(vendor: str, retries: int) -> None:
    provider = build_provider(vendor, config(vendor, f"http://127.0.0.1:{free_port()}", max_retries=retries))
    try:
        events, error = await collect(open_stream(provider, ask("hi")))
    finally:
        await provider.aclose()

    assert events == []
    assert error is not None
    assert (error.code, error.retryable) == ("upstream_unavailable", True)


async def test_a_stalled_upstream_times_out_and_is_closed(fake: FakeUpstream[Any], build: Build) -> None:
    fake.then(script(fake, faults=Faults(stall_after=1)))

    events, error = await collect(open_stream(build(idle_timeout=0.3), ask("hi")))

    assert text_of(events) == "Hello"
    assert error is not None
    assert (error.code, error.retryable) == ("upstream_timeout", True)
    await fake.client_closed_early.wait()


async def test_the_idle_timer_ignores_time_the_consumer_spends(fake: FakeUpstream[Any], build: Build) -> None:
    provider = build(idle_timeout=0.2)
    events = []
    async for event in open_stream(provider, ask("hi")):
        events.append(event)
        if len(events) <= 2:  # hold events longer than the idle timeout: a slow consumer
            await asyncio.sleep(0.3)  # the behaviour under test, not synchronisation

    assert events[-1] == Finished("stop", provider.info.default_model)


async def test_a_dropped_connection_is_disconnected(fake: FakeUpstream[Any], build: Build) -> None:
    fake.then(script(fake, faults=Faults(drop_after=2)))

    events, error = await collect(open_stream(build(), ask("hi")))

    assert text_of(events) == "Hello, world"
    assert error is not None
    assert (error.code, error.retryable) == ("upstream_disconnected", True)


async def test_a_body_ending_before_the_answer_is_disconnected(fake: FakeUpstream[Any], build: Build) -> None:
    fake.then(script(fake, faults=Faults(end_after=1)))

    events, error = await collect(open_stream(build(), ask("hi")))

    assert text_of(events) == "Hello"
    assert error is not None
    assert error.code == "upstream_disconnected"
    assert not any(isinstance(e, Finished) for e in events)


async def test_aclose_mid_stream_closes_the_upstream_connection(
    fake: FakeUpstream[Any], build: Build
) -> None:
    fake.then(script(fake, faults=Faults(stall_after=2)))
    stream = open_stream(build(), ask("hi"))
    received: list[str] = []
    async for event in stream:
        if isinstance(event, TextDelta):
            received.append(event.text)
            if len(received) == 2:
                break
    await stream.aclose()  # type: ignore[attr-defined]

    await fake.client_closed_early.wait()
    assert received == ["Hello", ", world"]
    assert fake.completed == 0


async def test_cancelling_the_consumer_closes_the_upstream_connection(
    fake: FakeUpstream[Any], build: Build
) -> None:
    fake.then(script(fake, faults=Faults(stall_after=1)))
    provider = build()
    first_text = asyncio.Event()

    async def consume() -> None:
        async for event in open_stream(provider, ask("hi")):
            if isinstance(event, TextDelta):
                first_text.set()

    task = asyncio.create_task(consume())
    await first_text.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await fake.client_closed_early.wait()
    assert fake.completed == 0


async def test_many_deltas_split_across_reads_arrive_whole(fake: FakeUpstream[Any], build: Build) -> None:
    words = tuple(f" w{n}" for n in range(300))
    fake.then(script(fake, text=words))

    events, error = await collect(open_stream(build(), ask("long")))

    assert error is None
    assert text_of(events) == "".join(words)


async def test_a_gzip_compressed_stream_is_decoded(fake: FakeUpstream[Any], build: Build) -> None:
    # A proxy may compress the event stream; the fast raw read must not hand over gzip bytes.
    fake.then(script(fake, faults=Faults(gzip=True)))
    provider = build()

    events, error = await collect(open_stream(provider, ask("hi")))

    assert error is None
    assert text_of(events) == "Hello, world!"
    assert events[-1] == Finished("stop", provider.info.default_model)


# ------------------------------------------------------------------------ what each vendor streams


def _anthropic_sent(sent: FakeRequest) -> None:
    assert sent.path == "/v1/messages"
    # The SDK decides how the key travels (x-api-key, or Bearer in newer versions): it must arrive.
    assert ANTHROPIC_KEY in (
        sent.headers.get("x-api-key"),
        sent.headers.get("authorization", "").removeprefix("Bearer "),
    )
    assert sent.json() == {
        "model": "claude-test",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Say hello"}],
        "system": "Be brief",
        "stream": True,
    }


def _openai_sent(sent: FakeRequest) -> None:
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    body = sent.json()
    assert body["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Say hello"},
    ]
    assert (body["stream"], body["stream_options"], body["max_tokens"]) == (
        True,
        {"include_usage": True},
        1024,
    )


@dataclass(frozen=True)
class Case:
    """What differs between the vendors, for the same test."""

    model: str  # a model name the request asks for (the fakes echo it)
    sent: Callable[[FakeRequest], None]  # asserts the request the SDK sent for "Say hello"
    usage: list[Usage]  # the usage events of the fake's default answer
    tail: list[ProviderEvent]  # how the default answer ends (with ``model``)
    thinking: list[dict[str, Any]]  # scripts that send "Let me", " think." as reasoning, then "Done."
    tools: dict[str, Any]  # a script with tool calls ...
    calls: list[tuple[ToolCallStart, dict[str, Any]]]  # ... and the calls it makes, with their input
    stop_field: str  # the script's field for the finish reason on the wire
    retried_status: int  # a refused start the SDK retries
    # An error event after the 200 that is worth retrying: (script fields, text before it or None,
    # code, words of the message or None), and one that is not: (script fields, text before it or None).
    retryable_error: tuple[dict[str, Any], str | None, str, str | None]
    final_error: tuple[dict[str, Any], str | None]


CASES = {
    "anthropic": Case(
        model="claude-test",
        sent=_anthropic_sent,
        usage=[Usage(21, 1), Usage(21, 3)],
        tail=[Finished("stop", "claude-test")],
        thinking=[{"thinking": ("Let me", " think."), "text": ("Done.",)}],
        tools={"text": ("Checking.",), "tool": ToolUse()},
        # Numbered among the answer's tool calls (the text block before it does not count).
        calls=[(ToolCallStart("toolu_01FakeWeather", "get_weather", 0), {"location": "Paris, France"})],
        stop_field="stop_reason",
        retried_status=529,
        retryable_error=(
            {"faults": Faults(error_after=2)},
            "Hello, world",
            "upstream_overloaded",
            "overloaded_error",
        ),
        final_error=({"stream_error_type": "mystery_error", "faults": Faults(error_after=1)}, None),
    ),
    "openai": Case(
        model="gpt-test",
        sent=_openai_sent,
        usage=[Usage(9, 3)],
        tail=[Usage(9, 3), Finished("stop", "gpt-test")],
        thinking=[
            {"reasoning": ("Let me", " think."), "reasoning_field": name, "text": ("Done.",)}
            for name in ("reasoning_content", "reasoning")
        ],
        tools={
            "text": (),
            "tool_calls": (
                ToolCall(),
                ToolCall(id="call_Second02", name="get_time", argument_parts=('{"tz": ', '"CET"}')),
            ),
        },
        calls=[
            (ToolCallStart("call_FakeWeather01", "get_weather", 0), {"location": "Paris"}),
            (ToolCallStart("call_Second02", "get_time", 1), {"tz": "CET"}),
        ],
        stop_field="finish_reason",
        retried_status=503,
        retryable_error=({"faults": Faults(error_after=1)}, None, "upstream_unavailable", None),
        final_error=(
            {"stream_error_type": "invalid_request_error", "faults": Faults(error_after=2)},
            "Hello, world",
        ),
    ),
}


@pytest.fixture
def case(fake: FakeUpstream[Any]) -> Case:
    return CASES[vendor_of(fake)]


@pytest.fixture
async def provider(build: Build) -> Provider:
    return build()


async def test_streams_text_model_usage_and_stop(
    provider: Provider, fake: FakeUpstream[Any], case: Case
) -> None:
    events, error = await collect(
        open_stream(provider, ask("Say hello", model=case.model, system="Be brief"))
    )

    assert error is None
    assert events[0] == ModelInfo(case.model)
    assert text_of(events) == "Hello, world!"
    assert of_type(events, Usage) == case.usage
    assert events[-len(case.tail) :] == case.tail
    case.sent(fake.requests[0])


async def test_the_default_model_is_asked_for_when_the_request_names_none(
    provider: Provider, fake: FakeUpstream[Any]
) -> None:
    events, _ = await collect(open_stream(provider, ask("hi")))

    assert fake.requests[0].json()["model"] == provider.info.default_model
    assert events[0] == ModelInfo(provider.info.default_model)


async def test_thinking_comes_first_and_signatures_stay_out(
    provider: Provider, fake: FakeUpstream[Any], case: Case
) -> None:
    for fields in case.thinking:  # OpenAI-compatible servers name the field either way
        fake.then(script(fake, **fields))

        events, error = await collect(open_stream(provider, ask("hard question")))

        assert error is None
        content = [e for e in events if isinstance(e, TextDelta | ThinkingDelta)]
        assert content == [ThinkingDelta("Let me"), ThinkingDelta(" think."), TextDelta("Done.")]


async def test_tool_calls_stream_start_arguments_and_end(
    provider: Provider, fake: FakeUpstream[Any], case: Case
) -> None:
    fake.then(script(fake, **case.tools))

    events, error = await collect(open_stream(provider, ask("weather in Paris?")))

    assert error is None
    tool_events = [e for e in events if isinstance(e, ToolCallStart | ToolCallDelta | ToolCallEnd)]
    starts = [start for start, _input in case.calls]
    assert of_type(events, ToolCallStart) == starts
    assert tool_events[0] == starts[0]
    arguments: dict[str, str] = {}
    for delta in of_type(events, ToolCallDelta):
        arguments[delta.id] = arguments.get(delta.id, "") + delta.partial_json
    # every fragment carries its call's id
    assert {k: json.loads(v) for k, v in arguments.items()} == {
        start.id: given for start, given in case.calls
    }
    assert of_type(events, ToolCallEnd) == [ToolCallEnd(start.id) for start in starts]
    assert tool_events[-1] == ToolCallEnd(starts[-1].id)
    # Every end comes after that call's last argument fragment, and the finish comes last.
    last_delta = max(i for i, e in enumerate(events) if isinstance(e, ToolCallDelta))
    first_end = min(i for i, e in enumerate(events) if isinstance(e, ToolCallEnd))
    assert last_delta < first_end
    assert events[-1] == Finished("tool_use", provider.info.default_model)


@pytest.mark.parametrize(
    ("fake", "on_the_wire", "finish_reason"),
    [
        ("anthropic", "end_turn", "stop"),
        ("anthropic", "max_tokens", "length"),
        ("anthropic", "tool_use", "tool_use"),
        ("anthropic", "stop_sequence", "stop_sequence"),
        ("anthropic", "refusal", "refusal"),
        ("openai", "stop", "stop"),
        ("openai", "length", "length"),
        ("openai", "content_filter", "content_filter"),
        ("openai", "tool_calls", "tool_use"),
    ],
    indirect=["fake"],
)
async def test_the_finish_reason_is_normalised(
    provider: Provider, fake: FakeUpstream[Any], case: Case, on_the_wire: str, finish_reason: str
) -> None:
    fake.then(script(fake, **{case.stop_field: on_the_wire}))

    events, _ = await collect(open_stream(provider, ask("hi")))

    assert isinstance(events[-1], Finished)
    assert events[-1].finish_reason == finish_reason


# ------------------------------------------------------------------------ how errors map to codes

_STATUSES = [
    (400, "upstream_bad_request", False),
    (401, "upstream_auth", False),
    (403, "upstream_auth", False),
    (404, "upstream_bad_request", False),
    (429, "rate_limited", True),
    (500, "upstream_unavailable", True),
]


@pytest.mark.parametrize(
    ("fake", "status", "code", "retryable"),
    [(vendor, *row) for vendor in VENDORS for row in _STATUSES]
    + [("anthropic", 529, "upstream_overloaded", True), ("openai", 503, "upstream_unavailable", True)],
    indirect=["fake"],
)
async def test_an_error_status_before_the_first_byte_maps_to_a_code(
    provider: Provider, fake: FakeUpstream[Any], status: int, code: str, retryable: bool
) -> None:
    fake.then(script(fake, faults=Faults(status=status)))

    events, error = await collect(open_stream(provider, ask("hi")))

    assert events == []
    assert error is not None
    assert (error.code, error.retryable, error.status) == (code, retryable, status)
    assert "fake" in error.message  # the vendor's own words reach the user


async def test_the_sdk_retries_a_refused_start_when_allowed(
    fake: FakeUpstream[Any], build: Build, case: Case
) -> None:
    fake.then(script(fake, faults=Faults(status=case.retried_status)))

    events, error = await collect(open_stream(build(max_retries=1), ask("hi")))

    assert error is None
    assert text_of(events) == "Hello, world!"
    assert len(fake.requests) == 2


async def test_a_retryable_error_event_after_the_200_is_a_retryable_error(
    provider: Provider, fake: FakeUpstream[Any], case: Case
) -> None:
    fields, before, code, words = case.retryable_error
    fake.then(script(fake, **fields))

    events, error = await collect(open_stream(provider, ask("hi")))

    if before is not None:
        assert text_of(events) == before
    assert error is not None
    assert (error.code, error.retryable) == (code, True)
    if words is not None:
        assert words in error.message


async def test_any_other_error_event_after_the_200_is_a_final_upstream_error(
    provider: Provider, fake: FakeUpstream[Any], case: Case
) -> None:
    fields, before = case.final_error
    fake.then(script(fake, **fields))

    events, error = await collect(open_stream(provider, ask("hi")))

    if before is not None:
        assert text_of(events) == before
    assert error is not None
    assert (error.code, error.retryable) == ("upstream_error", False)


async def test_answers_one_after_another_reuse_one_connection(fake: FakeUpstream[Any]) -> None:
    # Pushed, the body is read through a protocol put in front of aiohttp's: the connection still
    # goes back to aiohttp's pool and serves the next request. (No spare connection: one is enough.)
    vendor = vendor_of(fake)
    provider = build_provider(vendor, dataclasses.replace(config(vendor, fake.url), spare_connections=0))
    try:
        await answers_in_a_row(provider, 3)
    finally:
        await provider.aclose()
    assert fake.connections_accepted == 1


# ------------------------------------------------------------------------ one vendor's own


async def test_openai_local_server_needs_no_key(fake_openai: FakeOpenAI) -> None:
    provider = build_provider(
        "openai", ProviderConfig(openai_base_url=f"{fake_openai.url}/v1", idle_timeout=30.0, max_retries=0)
    )
    try:
        events, error = await collect(open_stream(provider, ask("hi", model="llama3")))
    finally:
        await provider.aclose()

    assert error is None
    assert text_of(events) == "Hello, world!"


async def test_openai_server_without_done_line_still_finishes(fake_openai: FakeOpenAI) -> None:
    fake_openai.then(OpenAIScript(send_done=False))
    provider = build_provider("openai", config("openai", fake_openai.url))
    try:
        events, error = await collect(open_stream(provider, ask("hi")))
    finally:
        await provider.aclose()

    assert error is None
    assert events[-1] == Finished("stop", provider.info.default_model)


@pytest.mark.fast_paths(_fast.BODY_PUSH)
async def test_anthropic_sdk_body_is_read_from_aiohttp_buffer(fake_anthropic: FakeAnthropic) -> None:
    # The per-token fast path depends on the SDK's aiohttp transport internals: if an SDK upgrade
    # moves them, this fails instead of the gateway silently getting slower.
    client = anthropic.AsyncAnthropic(
        api_key=ANTHROPIC_KEY, base_url=fake_anthropic.url, http_client=anthropic.DefaultAioHttpClient()
    )
    try:
        async with client.messages.with_streaming_response.create(
            model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}], stream=True
        ) as response:
            read = body_reader(response.http_response)
            assert isinstance(getattr(read, "__self__", None), aiohttp.StreamReader)
            body = b""
            while chunk := await read():
                body += chunk
    finally:
        await client.close()
    assert b"event: message_stop" in body


@pytest.mark.parametrize(
    ("tracer_provider", "env", "spans"),
    [
        (None, None, False),  # nothing would record a span: the SDK builds none
        (trace.NoOpTracerProvider, None, True),  # a configured provider: the SDK's default
        (None, "true", True),  # the SDK's own switch decides
        (trace.NoOpTracerProvider, "false", False),
    ],
)
def test_the_anthropic_sdk_makes_spans_only_where_something_can_record_them(
    monkeypatch: pytest.MonkeyPatch,
    tracer_provider: type[trace.TracerProvider] | None,
    env: str | None,
    spans: bool,
) -> None:
    if tracer_provider is not None:
        monkeypatch.setattr(trace, "get_tracer_provider", tracer_provider)
    if env is None:
        monkeypatch.delenv("ANTHROPIC_OPEN_TELEMETRY", raising=False)
    else:
        monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", env)
    provider = AnthropicProvider(
        ProviderConfig(anthropic_api_key=ANTHROPIC_KEY, anthropic_base_url="http://127.0.0.1:9")
    )
    assert provider._client.open_telemetry["traces"]["enabled"] is spans
