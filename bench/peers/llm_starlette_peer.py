"""W4 peer: FastAPI + sse-starlette + the official anthropic SDK (AsyncAnthropic.messages.stream).

POST /v1/chat {messages, max_tokens} -> SSE ``data: {"text": ...}`` per delta, then ``data: [DONE]``.
Run: python llm_starlette_peer.py PORT UPSTREAM_URL  (uvicorn, uvloop + httptools, one process).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from anthropic import AsyncAnthropic
from fastapi import FastAPI, Request
from sse_starlette.sse import EventSourceResponse

app = FastAPI()
client = AsyncAnthropic(api_key="dummy", base_url=sys.argv[2] if len(sys.argv) > 2 else None, max_retries=0)


@app.post("/v1/chat")
async def chat(request: Request) -> EventSourceResponse:
    body: dict[str, Any] = await request.json()

    async def events() -> AsyncIterator[dict[str, str]]:
        async with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=body.get("max_tokens", 1024), messages=body["messages"]
        ) as stream:
            async for text in stream.text_stream:
                yield {"data": json.dumps({"text": text})}
        yield {"data": "[DONE]"}

    return EventSourceResponse(events())


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )
