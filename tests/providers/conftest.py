from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fakes.fake_anthropic import FakeAnthropic
from tests.fakes.fake_openai import FakeOpenAI
from tests.providers.helpers import READING


@pytest.fixture(params=["pull", "push"])
def reading(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test once per way of reading a provider (see helpers.READING)."""
    READING["mode"] = request.param
    yield request.param
    READING["mode"] = "pull"


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake
