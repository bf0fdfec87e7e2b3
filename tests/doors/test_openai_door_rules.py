"""The OpenAI door's rules: refusals in OpenAI's error shape, auth with ssegate's keys, model
listing, and resuming a stream in the same dialect with Last-Event-ID."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from ssegate.codec.events import Event
from tests.doors.conftest import ssegate_demo
from tests.support.sse import read_stream

KEYS = "alice:sk-alice-1:generate,subscribe"
USER = [{"role": "user", "content": "hello there"}]


def sdk(base_url: str, api_key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=10)


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"n": 2}, "n", "invalid_request"),
        ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls", "invalid_request"),
        ({"response_format": {"type": "json_object"}}, "response_format", "unsupported_parameter"),
        ({"logprobs": True}, "logprobs", "invalid_request"),
        ({"max_tokens": 0}, "max_tokens", "invalid_request"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_request"),
    ],
)
async def test_unsupported_parameters_are_refused_by_name(
    extra: dict[str, Any], param: str, code: str
) -> None:
    async with ssegate_demo() as base_url, sdk(base_url) as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.chat.completions.create(model="demo-1", messages=USER, **extra)  # type: ignore[call-overload]
    error = raised.value
    assert error.status_code == 400
    assert error.param == param
    assert error.code == code
    assert error.type == "invalid_request_error"
    assert param in error.message


async def test_bad_messages_and_unknown_models_answer_400() -> None:
    async with ssegate_demo() as base_url, sdk(base_url) as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.chat.completions.create(
                model="demo-1", messages=[{"role": "wizard", "content": "x"}]
            )  # type: ignore[list-item]
        assert raised.value.param == "messages[0].role"
        with pytest.raises(openai.BadRequestError) as raised:
            await client.chat.completions.create(model="demo/no-such-model", messages=USER)  # type: ignore[arg-type]
        assert raised.value.code == "unknown_model"
    async with ssegate_demo() as base_url, httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post(
            "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_json"
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_api_keys_authorize_the_door() -> None:
    async with ssegate_demo(api_keys=KEYS) as base_url:
        async with sdk(base_url, "sk-wrong") as client:
            with pytest.raises(openai.AuthenticationError) as raised:
                await client.chat.completions.create(model="demo-1", messages=USER)
            assert raised.value.status_code == 401
            assert raised.value.code == "invalid_api_key"
        async with sdk(base_url, "sk-alice-1") as client:
            completion = await client.chat.completions.create(model="demo-1", messages=USER)
            assert completion.choices[0].message.content
            listed = [m.id async for m in client.models.list()]
    assert "demo-1" in listed


async def test_start_rate_limit_answers_429_in_openai_shape() -> None:
    async with ssegate_demo(generation_starts_per_minute=1) as base_url, sdk(base_url) as client:
        await client.chat.completions.create(model="demo-1", messages=USER)
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(model="demo-1", messages=USER)
    assert raised.value.status_code == 429
    assert raised.value.response.headers.get("retry-after")


async def test_models_lists_the_configured_providers() -> None:
    async with ssegate_demo() as base_url, sdk(base_url) as client:
        models = [m async for m in client.models.list()]
    assert {(m.id, m.owned_by) for m in models} >= {("demo-1", "demo"), ("demo", "demo")}


async def test_a_cut_stream_resumes_in_the_same_dialect_with_last_event_id() -> None:
    body = {
        "model": "demo-1",
        "messages": [{"role": "user", "content": "tell me more /long"}],
        "stream": True,
    }
    async with ssegate_demo() as base_url, httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        first = await read_stream(http, "POST", "/v1/chat/completions", json_body=body, max_events=20)
        generation_id = first.headers["x-generation-id"]
        last_id = first.events[-1].id
        rest = await read_stream(
            http,
            "GET",
            f"/v1/chat/completions/chatcmpl-{generation_id}",
            headers={"accept": "text/event-stream", "last-event-id": last_id},
        )
        whole = await read_stream(
            http, "GET", f"/v1/chat/completions/{generation_id}", headers={"accept": "text/event-stream"}
        )
        completion = (await http.get(f"/v1/chat/completions/chatcmpl-{generation_id}")).json()
    assert rest.status == 200
    assert rest.headers["x-generation-id"] == generation_id
    joined = first.events + rest.events
    assert [e.data for e in joined] == [e.data for e in whole.events]
    assert joined[-1].data == "[DONE]"
    assert _text(joined) == completion["choices"][0]["message"]["content"]
    assert len(_text(joined)) > 500


def _text(events: list[Event]) -> str:
    import json

    text = ""
    for event in events:
        if event.data != "[DONE]":
            for choice in json.loads(event.data)["choices"]:
                text += choice["delta"].get("content") or ""
    return text
