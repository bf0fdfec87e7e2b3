"""One headless Chromium per test module: starting one takes 1-2 s, and ~30 tests each started
their own. A module that uses it runs its tests in the module's event loop (Playwright's
connection to Chromium lives in the loop it was started in): ``pytestmark`` says so."""

from collections.abc import AsyncIterator

import pytest_asyncio
from playwright.async_api import Browser

from tests.support.browser import chromium


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_chromium() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running
