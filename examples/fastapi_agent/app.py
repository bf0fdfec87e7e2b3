"""A FastAPI app with its own routes and database, ssegate mounted at /sse, and an agent.

    uvicorn --factory examples.fastapi_agent.app:from_env     # from the repository's root
    open http://127.0.0.1:8000/

- ``POST /api/conversations`` starts a conversation (the app's own table);
- ``POST /api/conversations/{id}/messages`` saves the question and starts the agent through
  ssegate; the answer streams from ``/sse/v1/generations/{gid}/events`` (resume, many viewers,
  stopped when nobody watches);
- the on-finish hook saves the answer (text, tool calls, usage, how it ended) in the same
  database, exactly once, whether it finished, failed or was cancelled;
- who is who comes from the app's own session cookie (the principal hook): ssegate refuses anyone
  else's generations.

Without ``ANTHROPIC_API_KEY`` the agent runs on ssegate's offline demo model, which calls the
tools when a question asks for them ("What is the weather in Paris?", "Calculate 12*7").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from ssegate.config import Settings
from ssegate.finish import FinishedGeneration
from ssegate.mount import gateway_of, mount
from ssegate.producers import start
from ssegate.providers import ProviderConfig, build_provider
from ssegate.request import GenerationRequest, Message

from .agent import make_agent
from .db import Database

PAGE = Path(__file__).with_name("page.html")
SESSION_COOKIE = "session"
SSE_PREFIX = "/sse"


class Question(BaseModel):
    content: str = Field(min_length=1, max_length=4000)


def create(db_path: str, settings: Settings | None = None) -> FastAPI:
    """The app, storing its data in the SQLite file ``db_path``."""
    settings = settings or Settings.from_env()
    db = Database(db_path)
    # The model the agent asks: Anthropic when a key is set, else the offline demo model.
    model_name = "anthropic" if settings.anthropic_api_key else "demo"
    model = build_provider(
        model_name,
        ProviderConfig(
            anthropic_api_key=settings.anthropic_api_key,
            anthropic_base_url=settings.anthropic_base_url,
            anthropic_model=settings.model,
            demo_ttft=settings.demo_ttft,
            demo_tokens_per_second=settings.demo_tokens_per_second,
        ),
    )
    agent = make_agent(model)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await model.aclose()
        db.close()

    app = FastAPI(title="ssegate agent example", lifespan=lifespan)

    def user_of(request: Request) -> str | None:
        """The app's own auth: a session cookie naming the user (a real app checks a session table)."""
        session = request.cookies.get(SESSION_COOKIE)
        return session if session and session.startswith("user-") else None

    async def save_answer(finished: FinishedGeneration) -> None:
        """ssegate's on-finish hook: the answer goes into the conversation, once."""
        conversation_id = finished.metadata.get("conversation_id")
        if not isinstance(conversation_id, int):
            return  # not one of ours (a generation started straight on /sse)
        tool_calls = [{"id": c.id, "name": c.name, "input": c.input} for c in finished.tool_calls]
        await asyncio.to_thread(
            db.save_answer,
            conversation_id,
            finished.id,
            finished.text,
            finished.state,
            tool_calls,
            finished.usage,
        )

    sse = mount(app, SSE_PREFIX, settings, principal=user_of, producers=[agent], on_finish=save_answer)

    def require_user(request: Request) -> str:
        user = user_of(request)
        if user is None:
            raise HTTPException(401, "no session: open / first")
        return user

    async def require_conversation(request: Request, conversation_id: int) -> str:
        user = require_user(request)
        if await asyncio.to_thread(db.owner_of, conversation_id) != user:
            raise HTTPException(404, "no such conversation")
        return user

    @app.get("/", response_class=HTMLResponse)
    async def page(request: Request, response: Response) -> HTMLResponse:
        html = HTMLResponse(PAGE.read_text(encoding="utf-8"))
        if user_of(request) is None:
            html.set_cookie(SESSION_COOKIE, f"user-{secrets.token_hex(8)}", httponly=True, samesite="lax")
        return html

    @app.post("/api/conversations", status_code=201)
    async def new_conversation(request: Request) -> dict[str, Any]:
        user = require_user(request)
        conversation_id = await asyncio.to_thread(db.create_conversation, user, "New conversation")
        return {"id": conversation_id}

    @app.get("/api/conversations/{conversation_id}")
    async def conversation(request: Request, conversation_id: int) -> dict[str, Any]:
        await require_conversation(request, conversation_id)
        messages = await asyncio.to_thread(db.messages, conversation_id)
        return {"id": conversation_id, "messages": [m.to_json() for m in messages]}

    @app.post("/api/conversations/{conversation_id}/messages", status_code=202)
    async def ask(request: Request, conversation_id: int, question: Question) -> dict[str, Any]:
        user = await require_conversation(request, conversation_id)
        await asyncio.to_thread(db.add_user_message, conversation_id, question.content)
        history = await asyncio.to_thread(db.messages, conversation_id)
        # The conversation so far, as the model sees it (answers in words only).
        messages = tuple(Message(m.role, m.content) for m in history if m.content)  # type: ignore[arg-type]
        meta = await start(
            gateway_of(sse),
            agent,
            GenerationRequest(messages=messages),
            owner=user,
            metadata={"conversation_id": conversation_id},
        )
        base = f"{request.scope.get('root_path', '')}{SSE_PREFIX}/v1/generations/{meta['id']}"
        return {"generation_id": meta["id"], "events_url": f"{base}/events", "cancel_url": f"{base}/cancel"}

    return app


def from_env() -> FastAPI:
    """The uvicorn factory: the database file from ``AGENT_DB`` (default ``agent.db``)."""
    return create(os.environ.get("AGENT_DB", "agent.db"))
