"""Headless Debian Chromium driven by Playwright (never ``playwright install``)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator

from playwright.async_api import Browser, async_playwright

CHROMIUM = "/usr/bin/chromium"
# The machine's network is closed: without these, Chromium keeps dialling Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_available() -> bool:
    return shutil.which(CHROMIUM) is not None


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    with tempfile.TemporaryDirectory(prefix="ssegate-chromium-"):
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                await browser.close()
