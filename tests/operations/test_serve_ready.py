"""``ssegate serve`` says it is serving only once a client can connect.

With a vendor key configured, the app's start-up imports the vendor SDK first (seconds); a script
or a person that connects as soon as the line appears must not be refused.
"""

from __future__ import annotations

import asyncio
import os
import sys

import httpx

from tests.support.servers import free_port

_WAIT = 60.0


async def test_serve_announces_itself_once_it_accepts_connections() -> None:
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ANTHROPIC_API_KEY": "test",
        "SSEGATE_ANTHROPIC_BASE_URL": "http://127.0.0.1:9",  # never called: the SDK is only loaded
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ssegate", "serve", "--port", str(port),
        env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        seen: list[str] = []
        while not (line := (await asyncio.wait_for(process.stderr.readline(), _WAIT)).decode()).startswith(
            "ssegate: serving on"
        ):
            assert line, f"ssegate serve ended before announcing itself: {seen}"
            seen.append(line)
        assert f"http://127.0.0.1:{port}" in line
        async with httpx.AsyncClient(timeout=_WAIT) as client:
            response = await client.get(f"http://127.0.0.1:{port}/healthz")  # at once: no retry
        assert response.status_code == 200
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), _WAIT)
