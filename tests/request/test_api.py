"""The request model at POST /v1/generations on a real server: 400s, 413, what providers refuse,
metadata echoed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.conftest import ServerFactory, ssegate_server
from tests.support.sse import read_stream

__all__ = ["ssegate_server"]

HI = [{"role": "user", "content": "hi"}]
TWENTY_MIB = 20 << 20


async def test_a_20_mib_body_is_413_before_it_is_read(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        big = b'{"messages": [{"role": "user", "content": "' + b"x" * TWENTY_MIB + b'"}]}'
        response = await client.post(
            "/v1/generations", content=big, headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


async def test_a_wrong_field_is_a_400_naming_it(ssegate_server: ServerFactory) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "t", "input": {}}]},
            {"role": "tool", "content": [{"type": "tool_result", "tool_use_id": "c2", "content": "x"}]},
        ],
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
    }
    async with ssegate_server() as client:
        response = await client.post("/v1/generations", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["field"] == "messages[2].content[0].tool_use_id"
    assert "c2" in error["message"]


@pytest.mark.parametrize(
    ("provider", "extra", "field"),
    [
        ("anthropic", {"temperature": 0.2}, "temperature"),
        ("anthropic", {"top_p": 0.5}, "top_p"),
        ("anthropic", {"reasoning_effort": "minimal"}, "reasoning_effort"),
        ("anthropic", {"thinking": {"budget_tokens": 100}}, "thinking.budget_tokens"),
        ("anthropic", {"messages": [*HI, {"role": "system", "content": "late"}, *HI]}, "messages[1].role"),
        ("openai", {"thinking": {"budget_tokens": 2048}}, "thinking"),
        ("openai", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
async def test_what_a_provider_cannot_honour_is_a_400_naming_field_and_provider(
    ssegate_server: ServerFactory, provider: str, extra: dict[str, Any], field: str
) -> None:
    # Nothing listens at the upstream URLs: the refusal comes before any call.
    keys = {
        "anthropic_api_key": "sk-ant-test",
        "anthropic_base_url": "http://127.0.0.1:9",
        "openai_base_url": "http://127.0.0.1:9/v1",
    }
    async with ssegate_server(**keys) as client:
        body = {"messages": HI, "provider": provider, **extra}
        response = await client.post("/v1/generations", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_by_provider"
    assert (error["field"], error["provider"]) == (field, provider)
    assert provider in error["message"]


async def test_metadata_is_echoed_in_the_start_event_and_the_state(ssegate_server: ServerFactory) -> None:
    metadata = {"conversation": "c-42", "tags": ["a", "b"]}
    async with ssegate_server() as client:
        created = (await client.post("/v1/generations", json={"messages": HI, "metadata": metadata})).json()
        received = await read_stream(client, "GET", created["events_url"])
        described = (await client.get(created["url"])).json()
    assert received.data("start")[0]["metadata"] == metadata
    assert described["metadata"] == metadata


async def test_the_start_event_has_no_metadata_when_none_was_sent(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        created = (await client.post("/v1/generations", json={"messages": HI})).json()
        received = await read_stream(client, "GET", created["events_url"])
        described = (await client.get(created["url"])).json()
    assert "metadata" not in received.data("start")[0]
    assert described["metadata"] is None
