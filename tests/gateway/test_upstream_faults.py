"""The whole gateway (real server, real vendor SDKs) against fake upstreams that fail on purpose.

Every failure ends the viewer's stream with exactly one ``error`` event ``{code, message,
retryable}``, never a hang and never an error page inside the stream; what the upstream sent
before failing reaches the viewer intact; cancel and abandonment close the upstream request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from ssegate.codec.events import Event
from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.fakes._upstream import FakeUpstream, Faults
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript
from tests.support.servers import serve_asgi
from tests.support.sse import Received, iter_stream, read_stream

IDLE_TIMEOUT = 0.5
_WAIT = 10.0
TEXT = ("Hel", "lo, ", "wor", "ld", "!")
SLOW_TEXT = tuple(f" tok{n}" for n in range(400))  # 20 s at 20/s: still running when the test acts
TERMINAL = {"done", "error"}


@dataclass(frozen=True, slots=True)
class Fault:
    faults: Faults
    code: str
    retryable: bool
    text_sent: int  # how many of TEXT's deltas the upstream sent before failing


BEFORE_FIRST_BYTE = [
    Fault(Faults(status=401), "upstream_auth", False, 0),
    Fault(Faults(status=403), "upstream_auth", False, 0),
    Fault(Faults(status=429), "rate_limited", True, 0),
    Fault(Faults(status=500), "upstream_unavailable", True, 0),
]
MID_STREAM = [
    Fault(Faults(stall_after=2), "upstream_timeout", True, 2),
    Fault(Faults(drop_after=2), "upstream_disconnected", True, 2),
    Fault(Faults(end_after=3), "upstream_disconnected", True, 3),
]
ANTHROPIC_FAULTS = {
    **{f"status_{f.faults.status}": f for f in BEFORE_FIRST_BYTE},
    "status_529": Fault(Faults(status=529), "upstream_overloaded", True, 0),
    "overloaded_event_after_first_byte": Fault(Faults(error_after=2), "upstream_overloaded", True, 2),
    "stalled": MID_STREAM[0],
    "dropped": MID_STREAM[1],
    "ended_without_message_stop": MID_STREAM[2],
    "garbage": Fault(Faults(garbage_after=2), "upstream_invalid", True, 2),
    "garbage_json": Fault(Faults(garbage_after=2, garbage=b'{"delta": 5}'), "upstream_invalid", True, 2),
}
OPENAI_FAULTS = {
    **{f"status_{f.faults.status}": f for f in BEFORE_FIRST_BYTE},
    "error_chunk_after_first_byte": Fault(Faults(error_after=2), "upstream_unavailable", True, 2),
    "stalled": MID_STREAM[0],
    "dropped": MID_STREAM[1],
    "garbage": Fault(Faults(garbage_after=2), "upstream_invalid", True, 2),
    "garbage_json": Fault(
        Faults(garbage_after=2, garbage=b'{"choices": 5}'),
        "upstream_invalid",
        True,
        2,
    ),
}


def anthropic_settings(url: str, **overrides: Any) -> Settings:
    return Settings(
        provider="anthropic",
        anthropic_api_key="test",
        anthropic_base_url=url,
        upstream_idle_timeout=IDLE_TIMEOUT,
        **overrides,
    )


def openai_settings(url: str, **overrides: Any) -> Settings:
    return Settings(
        provider="openai",
        openai_api_key="test",
        openai_base_url=url,
        upstream_idle_timeout=IDLE_TIMEOUT,
        **overrides,
    )


def slow_upstream(vendor: str) -> tuple[FakeUpstream[Any], Callable[..., Settings]]:
    """A fake of ``vendor`` answering 20 deltas a second, and the settings that point at it."""
    paced = Faults(interval=0.05)
    if vendor == "anthropic":
        return FakeAnthropic(AnthropicScript(text=SLOW_TEXT, faults=paced)), anthropic_settings
    return FakeOpenAI(OpenAIScript(text=SLOW_TEXT, faults=paced)), openai_settings


@asynccontextmanager
async def gateway_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_asgi(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=_WAIT) as client,
    ):
        yield client


# What a POST answers when the upstream refuses the start before its first event (issue 26,
# failure 9): the status class a client can act on, not 201 and then an error event.
START_STATUS = {
    "upstream_auth": 502,
    "rate_limited": 429,
    "upstream_unavailable": 503,
    "upstream_overloaded": 503,
    "upstream_timeout": 504,
}


async def generate(client: httpx.AsyncClient, refused: str | None = None) -> tuple[dict[str, Any], Received]:
    """Start a generation, read its stream to the end; also return its final description.

    ``refused``: the error code the POST itself must answer with (the start failed before the
    first event); the generation still exists, with that error as its stream's end.
    """
    response = await client.post("/v1/generations", json={"messages": [{"role": "user", "content": "hi"}]})
    if refused is None:
        assert response.status_code == 201, response.text
        generation_id = response.json()["id"]
    else:
        assert response.status_code == START_STATUS[refused], response.text
        error = response.json()["error"]
        assert error["code"] == refused
        assert error["message"]
        assert error["retryable"] is (refused != "upstream_auth")
        if response.status_code in (429, 503):
            assert response.headers["retry-after"]
        generation_id = error["id"]
    url = f"/v1/generations/{generation_id}"
    received = await asyncio.wait_for(read_stream(client, "GET", f"{url}/events"), _WAIT)
    described: dict[str, Any] = (await client.get(url)).json()
    return described, received


async def assert_upstream_closed_if_stalled(fake: FakeUpstream[Any], fault: Fault) -> None:
    """A stalled upstream is hung up on (idle timeout), not left holding a connection."""
    if fault.faults.stall_after is not None:
        await asyncio.wait_for(fake.client_closed_early.wait(), _WAIT)


def assert_ended_with_one_error(received: Received, fault: Fault) -> None:
    assert received.status == 200
    assert received.headers["content-type"] == "text/event-stream; charset=utf-8"
    # Only the wire vocabulary: no error page or traceback slipped into the stream.
    assert set(received.types) <= {"start", "status", "usage", "text", "error"}
    assert received.types[0] == "start"
    assert sum(t in TERMINAL for t in received.types) == 1
    assert received.types[-1] == "error"
    error = received.data("error")[0]
    assert set(error) == {"code", "message", "retryable"}
    assert error["code"] == fault.code
    assert error["retryable"] is fault.retryable
    assert error["message"]
    assert received.text == "".join(TEXT[: fault.text_sent])


@pytest.mark.parametrize("fault", ANTHROPIC_FAULTS.values(), ids=ANTHROPIC_FAULTS.keys())
async def test_gateway_anthropic_failure_ends_stream_with_one_error_event(fault: Fault) -> None:
    async with (
        FakeAnthropic(AnthropicScript(text=TEXT, faults=fault.faults)) as fake,
        gateway_client(anthropic_settings(fake.url)) as client,
    ):
        described, received = await generate(client, fault.code if fault.text_sent == 0 else None)
        await assert_upstream_closed_if_stalled(fake, fault)

    assert_ended_with_one_error(received, fault)
    assert described["state"] == "error"
    assert described["error"]["code"] == fault.code


@pytest.mark.parametrize("fault", OPENAI_FAULTS.values(), ids=OPENAI_FAULTS.keys())
async def test_gateway_openai_failure_ends_stream_with_one_error_event(fault: Fault) -> None:
    async with (
        FakeOpenAI(OpenAIScript(text=TEXT, faults=fault.faults)) as fake,
        gateway_client(openai_settings(fake.url)) as client,
    ):
        described, received = await generate(client, fault.code if fault.text_sent == 0 else None)
        await assert_upstream_closed_if_stalled(fake, fault)

    assert_ended_with_one_error(received, fault)
    assert described["state"] == "error"
    assert described["error"]["code"] == fault.code


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
async def test_gateway_streams_exactly_the_text_the_upstream_sent(vendor: str) -> None:
    fake: FakeUpstream[Any]
    if vendor == "anthropic":
        fake, settings = FakeAnthropic(AnthropicScript(text=TEXT)), anthropic_settings
    else:
        fake, settings = FakeOpenAI(OpenAIScript(text=TEXT)), openai_settings
    async with fake, gateway_client(settings(fake.url)) as client:
        described, received = await generate(client)

    assert received.text == "".join(TEXT)
    assert len(received.data("text")) == len(TEXT)
    assert received.types[-1] == "done"
    assert received.data("done")[0]["finish_reason"] == "stop"
    assert described["state"] == "done"
    assert fake.completed == 1


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
async def test_gateway_cancel_closes_the_upstream_request(vendor: str) -> None:
    fake, settings = slow_upstream(vendor)
    async with fake, gateway_client(settings(fake.url, abandon_grace=30.0)) as client:
        response = await client.post(
            "/v1/generations", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        created = response.json()
        texts = 0
        received = Received(status=0, headers=httpx.Headers())
        async with client.stream("GET", created["events_url"]) as stream:
            async for item in iter_stream(stream):
                if not isinstance(item, Event):
                    continue
                received.events.append(item)
                if item.event == "text":
                    texts += 1
                    if texts == 2:
                        assert (await client.post(created["cancel_url"])).status_code == 202
        await asyncio.wait_for(fake.client_closed_early.wait(), _WAIT)

    assert received.types[-1] == "done"
    assert received.data("done")[0]["finish_reason"] == "cancelled"
    assert fake.completed == 0
    assert received.text == "".join(SLOW_TEXT[: len(received.data("text"))])


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
async def test_gateway_abandonment_closes_the_upstream_request(vendor: str) -> None:
    fake, settings = slow_upstream(vendor)
    async with fake, gateway_client(settings(fake.url, abandon_grace=0.2)) as client:
        response = await client.post(
            "/v1/generations", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        created = response.json()
        # A tab reads a little and closes; nobody else watches.
        await read_stream(client, "GET", created["events_url"], max_events=4)
        await asyncio.wait_for(fake.client_closed_early.wait(), _WAIT)
        described = (await client.get(created["url"])).json()
        replay = await read_stream(client, "GET", created["events_url"])

    assert described["state"] == "cancelled"
    assert replay.data("done")[0]["reason"] == "abandoned"
    assert fake.completed == 0


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
async def test_a_cancelled_generation_records_the_output_tokens_it_streamed(vendor: str) -> None:
    # Anthropic reports output_tokens: 1 in message_start and the real count only at the end;
    # OpenAI reports nothing before the end. Cancelled in between, the deltas streamed count.
    fake, settings = slow_upstream(vendor)
    async with fake, gateway_client(settings(fake.url, abandon_grace=30.0)) as client:
        response = await client.post(
            "/v1/generations", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        created = response.json()
        texts = 0
        async with client.stream("GET", created["events_url"]) as stream:
            async for item in iter_stream(stream):
                if isinstance(item, Event) and item.event == "text":
                    texts += 1
                    if texts == 12:
                        assert (await client.post(created["cancel_url"])).status_code == 202
                if isinstance(item, Event) and item.event == "done":
                    done = json.loads(item.data)
        described = (await client.get(created["url"])).json()

    assert done["finish_reason"] == "cancelled"
    assert done["usage"]["output_tokens"] >= 12  # at least what the viewer received
    assert described["usage"]["output_tokens"] == done["usage"]["output_tokens"]


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
async def test_an_upstream_that_never_answers_ends_within_one_start_deadline_retries_included(
    vendor: str,
) -> None:
    # Issue 26, failure 7: without one deadline, each of the SDK's three attempts waits its own
    # timeout (idle timeout + 1 s): here 3 x 6 s, instead of the 1 s start deadline.
    silent = Faults(silent=True)
    fake: FakeUpstream[Any]
    if vendor == "anthropic":
        fake, settings = FakeAnthropic(AnthropicScript(faults=silent)), anthropic_settings
    else:
        fake, settings = FakeOpenAI(OpenAIScript(faults=silent)), openai_settings
    overrides = {"upstream_max_retries": 2, "upstream_start_timeout": 1.0}
    async with (
        fake,
        gateway_client(replace(settings(fake.url, **overrides), upstream_idle_timeout=5.0)) as client,
    ):
        began = time.monotonic()
        described, received = await generate(client, "upstream_timeout")
        took = time.monotonic() - began
        await asyncio.wait_for(fake.client_closed_early.wait(), _WAIT)  # hung up on, not left open

    assert received.types[-1] == "error"
    error = received.data("error")[0]
    assert error["code"] == "upstream_timeout"
    assert error["retryable"] is True
    assert "1 s" in error["message"]
    assert described["error"]["code"] == "upstream_timeout"
    assert took < 4.0


def _silent_then(vendor: str, *, answers: int) -> tuple[FakeUpstream[Any], Callable[..., Settings]]:
    """A fake of ``vendor`` whose first request gets a connection that never sends its response
    headers, and the next ``answers`` requests the same (then TEXT)."""
    silent = Faults(silent=True)
    fake: FakeUpstream[Any]
    if vendor == "anthropic":
        fake, settings = FakeAnthropic(AnthropicScript(text=TEXT)), anthropic_settings
        fake.then(*[AnthropicScript(faults=silent)] * (1 + answers))
    else:
        fake, settings = FakeOpenAI(OpenAIScript(text=TEXT)), openai_settings
        fake.then(*[OpenAIScript(faults=silent)] * (1 + answers))
    return fake, settings


FIRST_BYTE = {
    "upstream_max_retries": 2,
    "upstream_first_byte_timeout": 0.5,
    "upstream_start_timeout": 10.0,
    "upstream_idle_timeout": 5.0,  # the SDK's own timeout: 6 s per attempt
    "start_answer_wait": 10.0,  # the POST waits for all three attempts (about 3 s), even on a busy machine
}


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
async def test_an_attempt_without_response_headers_is_abandoned_after_the_first_byte_timeout_and_retried(
    vendor: str, paths: str
) -> None:
    # Issue 26, failure 7: the first attempt's upstream accepts the connection and holds its
    # headers; the second answers. Without a first-byte timeout of its own, the first attempt
    # waits the SDK's 6 s before the retry.
    fake, settings = _silent_then(vendor, answers=0)
    async with fake, gateway_client(replace(settings(fake.url), **FIRST_BYTE)) as client:
        began = time.monotonic()
        described, received = await generate(client)
        took = time.monotonic() - began
        await asyncio.wait_for(fake.client_closed_early.wait(), _WAIT)  # the held one: hung up on

    assert received.text == "".join(TEXT)
    assert described["state"] == "done"
    assert len(fake.requests) == 2
    assert took < 4.0


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
async def test_attempts_that_all_hold_their_headers_end_with_an_upstream_timeout_that_says_so(
    vendor: str, paths: str
) -> None:
    fake, settings = _silent_then(vendor, answers=2)  # every one of the 3 attempts
    async with fake, gateway_client(replace(settings(fake.url), **FIRST_BYTE)) as client:
        began = time.monotonic()
        described, received = await generate(client, "upstream_timeout")
        took = time.monotonic() - began

    error = received.data("error")[0]
    assert error["code"] == "upstream_timeout"
    assert error["message"] == "the upstream sent no response headers within 0.5 s (3 attempts)"
    assert described["error"] == error
    assert len(fake.requests) == 3
    assert took < FIRST_BYTE["upstream_start_timeout"]
