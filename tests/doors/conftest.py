"""Front-door tests: ssegate served for real in front of each provider (the demo model and the two
vendors' fake upstreams), read with the vendors' own SDKs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from ssegate.config import Settings
from ssegate.dialects.answer import Answer
from ssegate.server.app import create_app
from tests.fakes._upstream import FakeUpstream
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic, ToolUse
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript, ToolCall
from tests.support.servers import serve_asgi
from tests.support.sse import read_stream

FAST = {"demo_ttft": 0.01, "demo_tokens_per_second": 400.0}
PROVIDERS = ["demo", "anthropic", "openai"]


@dataclass
class Upstream:
    """A provider behind ssegate: its name, the settings pointing at it, its fake (not for demo)."""

    name: str
    settings: dict[str, Any]
    fake: FakeUpstream[Any] | None = None

    def then(self, *scripts: Any) -> None:
        assert self.fake is not None
        self.fake.then(*scripts)


@pytest.fixture(params=PROVIDERS)
async def upstream(request: pytest.FixtureRequest) -> AsyncIterator[Upstream]:
    name: str = request.param
    if name == "demo":
        yield Upstream("demo", {"provider": "demo"})
        return
    fake: FakeUpstream[Any]
    if name == "anthropic":
        fake = FakeAnthropic(AnthropicScript(thinking=("Let me", " think.")))
        async with fake:
            yield Upstream(
                name,
                {"provider": "anthropic", "anthropic_api_key": "sk-ant-test", "anthropic_base_url": fake.url},
                fake,
            )
        return
    fake = FakeOpenAI(OpenAIScript(reasoning=("Let me", " think.")))
    async with fake:
        yield Upstream(
            name,
            {"provider": "openai", "openai_api_key": "sk-test", "openai_base_url": f"{fake.url}/v1"},
            fake,
        )


def tool_script(name: str) -> Any:
    """A script whose answer is text then tool calls (two in parallel where the vendor can)."""
    if name == "anthropic":
        return AnthropicScript(text=("Checking",), tool=ToolUse())
    return OpenAIScript(
        text=(),
        tool_calls=(
            ToolCall(),
            ToolCall(id="call_FakeClock02", name="get_time", argument_parts=('{"tz":', ' "CET"}')),
        ),
    )


ServerFactory = Callable[..., AbstractAsyncContextManager[str]]


@pytest.fixture
def ssegate_in_front(upstream: Upstream) -> ServerFactory:
    """``async with ssegate_in_front(**settings) as base_url``: ssegate before ``upstream``."""

    @asynccontextmanager
    async def run(**overrides: Any) -> AsyncIterator[str]:
        settings = Settings(**{**FAST, **upstream.settings, **overrides})
        async with serve_asgi(create_app(settings)) as base_url:
            yield base_url

    return run


async def native_answer(base_url: str, prompt: str, **body: Any) -> Answer:
    """What the provider produced for ``prompt``, read through ssegate's own API."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.post(
            "/v1/generations", json={"messages": [{"role": "user", "content": prompt}], **body}
        )
        assert response.status_code == 201, response.text
        received = await read_stream(client, "GET", response.json()["events_url"])
    answer = Answer()
    for event in received.events:
        answer.add(event.event, orjson.loads(event.data))
    assert answer.ended
    return answer


@asynccontextmanager
async def ssegate_demo(**overrides: Any) -> AsyncIterator[str]:
    """ssegate in front of the demo model alone."""
    settings = Settings(**{**FAST, "provider": "demo", **overrides})
    async with serve_asgi(create_app(settings)) as base_url:
        yield base_url
