"""A start the upstream refuses before its first event is answered by each door's POST itself, with
a status a client can act on, in the door's own error shape (issue 26, failure 9): the vendor SDKs
raise their typed errors (``RateLimitError``, ``OverloadedError``...), not a stream error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.fakes._upstream import FakeUpstream, Faults
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript
from tests.support.servers import serve_asgi

USER = [{"role": "user", "content": "hello"}]
_WAIT = 10.0


@asynccontextmanager
async def refusing(vendor: str, status: int) -> AsyncIterator[tuple[str, FakeUpstream[Any]]]:
    """ssegate in front of a fake ``vendor`` that answers every call with ``status``; its URL."""
    fake: FakeUpstream[Any]
    if vendor == "anthropic":
        fake = FakeAnthropic(AnthropicScript(faults=Faults(status=status)))
    else:
        fake = FakeOpenAI(OpenAIScript(faults=Faults(status=status)))
    async with fake:
        if vendor == "anthropic":
            upstream = {"anthropic_api_key": "sk-ant-test", "anthropic_base_url": fake.url}
        else:
            upstream = {"openai_api_key": "sk-test", "openai_base_url": f"{fake.url}/v1"}
        settings = Settings(provider=vendor, upstream_max_retries=1, **upstream)  # type: ignore[arg-type]
        async with serve_asgi(create_app(settings)) as base_url:
            yield base_url, fake


# (upstream vendor, its status) -> what the OpenAI SDK raises, with which status and code.
OPENAI_DOOR = [
    ("openai", 429, openai.RateLimitError, 429, "rate_limited"),
    ("openai", 500, openai.InternalServerError, 503, "upstream_unavailable"),
    ("openai", 400, openai.InternalServerError, 502, "upstream_bad_request"),
    ("anthropic", 529, openai.InternalServerError, 503, "upstream_overloaded"),
]
ANTHROPIC_DOOR = [
    ("anthropic", 429, anthropic.RateLimitError, 429, "rate_limited"),
    ("anthropic", 529, anthropic.OverloadedError, 529, "upstream_overloaded"),
    ("anthropic", 500, anthropic.ServiceUnavailableError, 503, "upstream_unavailable"),
    ("openai", 401, anthropic.InternalServerError, 502, "upstream_auth"),
]


@pytest.mark.parametrize(("vendor", "status", "raised", "answered", "code"), OPENAI_DOOR)
async def test_the_openai_door_answers_a_refused_start_with_its_status_and_the_sdk_raises_its_error(
    vendor: str, status: int, raised: type[openai.APIStatusError], answered: int, code: str
) -> None:
    async with refusing(vendor, status) as (base_url, fake):
        client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=_WAIT)
        with pytest.raises(raised) as error:
            await client.chat.completions.create(model=vendor, messages=USER, stream=True)  # type: ignore[arg-type]
        await client.close()

    assert error.value.status_code == answered
    body = error.value.body
    assert isinstance(body, dict)
    assert body["code"] == code  # the SDK hands over the inner error object
    assert body["message"]
    assert body["type"] == ("rate_limit_error" if answered == 429 else "server_error")
    assert error.value.response.headers["x-generation-id"]
    if answered in (429, 503):
        assert error.value.response.headers["retry-after"]
    # the retries allowed (1) were made, then the POST answered
    assert len(fake.requests) == (1 if code in ("upstream_bad_request", "upstream_auth") else 2)


@pytest.mark.parametrize(("vendor", "status", "raised", "answered", "code"), ANTHROPIC_DOOR)
async def test_the_anthropic_door_answers_a_refused_start_with_its_status_and_the_sdk_raises_its_error(
    vendor: str, status: int, raised: type[anthropic.APIStatusError], answered: int, code: str
) -> None:
    async with refusing(vendor, status) as (base_url, _fake):
        client = anthropic.AsyncAnthropic(base_url=base_url, api_key="unused", max_retries=0, timeout=_WAIT)
        with pytest.raises(raised) as error:
            async with client.messages.stream(model=vendor, max_tokens=100, messages=USER) as stream:  # type: ignore[arg-type]
                await stream.get_final_message()
        await client.close()

    assert error.value.status_code == answered
    body = error.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    kinds = {429: "rate_limit_error", 529: "overloaded_error", 503: "overloaded_error", 502: "api_error"}
    assert body["error"]["type"] == kinds[answered]


async def test_the_ai_sdk_door_answers_a_refused_start_with_its_status() -> None:
    body = {"id": "c", "messages": [{"id": "1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
    async with refusing("openai", 429) as (base_url, _fake), httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/v1/ui/chat", json=body, timeout=_WAIT)
    assert response.status_code == 429
    assert response.headers["retry-after"]
    assert response.json()["error"]["code"] == "rate_limited"
