"""Every string from outside survives the wire (issue 26, failure 4).

A lone surrogate (``"\\ud800"`` JSON-escaped) from an upstream becomes U+FFFD in the viewer's text,
never ``error internal``; in a request body it is a 400 with a plain code, never a 500 whose code is
a class name.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript
from tests.gateway.test_upstream_faults import anthropic_settings, gateway_client, openai_settings
from tests.support.sse import read_stream

TEXT = ("Hel", "\ud800", "lo ", "\udc00x", "\ud83d\ude00")  # two lone halves, then a real pair
EXPECTED = "Hel\ufffdlo \ufffdx\U0001f600"


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
async def test_a_lone_surrogate_from_the_upstream_reaches_the_viewer_as_a_replacement_character(
    vendor: str,
) -> None:
    fake: Any
    if vendor == "anthropic":
        fake, settings = FakeAnthropic(AnthropicScript(text=TEXT)), anthropic_settings
    else:
        fake, settings = FakeOpenAI(OpenAIScript(text=TEXT)), openai_settings
    async with fake, gateway_client(settings(fake.url)) as client:
        created = await client.post("/v1/generations", json={"messages": [{"role": "user", "content": "hi"}]})
        assert created.status_code == 201, created.text
        received = await asyncio.wait_for(read_stream(client, "GET", created.json()["events_url"]), 10)
        described = (await client.get(created.json()["url"])).json()
    assert received.types[-1] == "done", received.events
    assert received.text == EXPECTED
    assert described["state"] == "done"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/topics/t/events", b'{"data": "a\\ud800b"}'),
        ("/v1/topics/t/events", b'{"data": {"\\udfff": 1}}'),
        ("/v1/generations", b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}'),
    ],
)
async def test_a_lone_surrogate_in_a_request_body_is_a_400_with_a_plain_code(path: str, body: bytes) -> None:
    async with gateway_client(anthropic_settings("http://127.0.0.1:9")) as client:
        response = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_unicode"
    assert "surrogate" in error["message"]
