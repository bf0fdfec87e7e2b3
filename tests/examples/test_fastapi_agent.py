"""examples/fastapi_agent run for real: a port, HTTP requests, the database row, the page."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples.fastapi_agent.app import create

from ssegate.config import Settings
from tests.support.browser import chromium
from tests.support.servers import serve_asgi
from tests.support.sse import read_stream

FAST = Settings(demo_ttft=0.01, demo_tokens_per_second=500.0, abandon_grace=30.0)
_WAIT = 10.0


@contextlib.asynccontextmanager
async def running(tmp_path: Path, settings: Settings = FAST) -> AsyncIterator[tuple[str, Path]]:
    db = tmp_path / "agent.db"
    async with serve_asgi(create(str(db), settings)) as url:
        yield url, db


@contextlib.asynccontextmanager
async def session(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=_WAIT) as client:
        page = await client.get("/")  # sets the session cookie
        assert page.status_code == 200
        assert "session" in client.cookies
        yield client


def saved_answers(db: Path) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute(
            "SELECT conversation_id, generation_id, state, content, tool_calls FROM messages "
            "WHERE role = 'assistant'"
        ).fetchall()


async def until_saved(db: Path, count: int) -> list[tuple[Any, ...]]:
    """The saved answers once there are ``count`` (the hook runs just after the stream's end)."""
    for _ in range(200):
        rows = saved_answers(db)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.025)
    raise AssertionError(f"{count} answer(s) not saved: {saved_answers(db)}")


async def test_a_question_streams_with_its_tool_call_and_the_answer_is_saved(tmp_path: Path) -> None:
    async with running(tmp_path) as (url, db), session(url) as client:
        conversation = (await client.post("/api/conversations")).json()["id"]
        started = await client.post(
            f"/api/conversations/{conversation}/messages", json={"content": "What is the weather in Paris?"}
        )
        assert started.status_code == 202, started.text
        body = started.json()
        assert body["events_url"].startswith("/sse/v1/generations/")
        got = await read_stream(client, "GET", body["events_url"])
        assert got.types[-1] == "done"
        calls = [d for d in got.data("tool_call") if d["phase"] == "end"]
        assert [(c["name"], c["input"]) for c in calls] == [("get_weather", {"city": "Paris"})]
        results = [d["value"] for d in got.data("data") if d["name"] == "tool_result"]
        assert len(results) == 1
        assert results[0]["result"].startswith("Paris: ")
        assert "Paris" in got.text
        # The on-finish hook saved the answer in the app's database, once.
        rows = await until_saved(db, 1)
        assert len(rows) == 1
        conversation_id, generation_id, state, content, tool_calls = rows[0]
        assert (conversation_id, generation_id, state) == (conversation, body["generation_id"], "done")
        assert content == got.text
        assert '"get_weather"' in tool_calls
        # ... and the app's own API shows it.
        messages = (await client.get(f"/api/conversations/{conversation}")).json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[1]["tool_calls"][0]["input"] == {"city": "Paris"}


async def test_another_session_sees_neither_the_conversation_nor_the_stream(tmp_path: Path) -> None:
    async with running(tmp_path) as (url, _), session(url) as alice, session(url) as bob:
        conversation = (await alice.post("/api/conversations")).json()["id"]
        body = (
            await alice.post(
                f"/api/conversations/{conversation}/messages", json={"content": "Calculate 12*7"}
            )
        ).json()
        assert (await bob.get(f"/api/conversations/{conversation}")).status_code == 404
        assert (await read_stream(bob, "GET", body["events_url"])).status == 404
        async with httpx.AsyncClient(base_url=url) as nobody:
            assert (await nobody.get(body["events_url"])).status_code == 401
        got = await read_stream(alice, "GET", body["events_url"])
        assert got.types[-1] == "done"
        assert "12*7 = 84" in str(got.data("data"))


async def test_a_cancelled_answer_is_saved_as_cancelled(tmp_path: Path) -> None:
    slow = Settings(demo_ttft=0.01, demo_tokens_per_second=20.0, abandon_grace=30.0)
    async with running(tmp_path, slow) as (url, db), session(url) as client:
        conversation = (await client.post("/api/conversations")).json()["id"]
        body = (
            await client.post(
                f"/api/conversations/{conversation}/messages", json={"content": "Tell me a story /long"}
            )
        ).json()
        first = await read_stream(client, "GET", body["events_url"], max_events=4)
        assert first.types[0] == "start"
        assert (await client.post(body["cancel_url"])).status_code == 202
        rows = await until_saved(db, 1)
        assert rows[0][2] == "cancelled"


@pytest.mark.browser
async def test_the_page_asks_and_shows_the_saved_answer_after_a_reload(tmp_path: Path) -> None:
    async with running(tmp_path) as (url, db), chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{url}/")
        await page.fill("#question", "What is the weather in Oslo?")
        await page.press("#question", "Enter")
        await page.wait_for_selector(".msg.assistant[data-state=ended]", timeout=_WAIT * 1000)
        shown = await page.text_content(".msg.assistant")
        assert shown is not None
        assert "get_weather → Oslo: " in shown
        await until_saved(db, 1)
        await page.reload()  # the conversation comes back from the app's database
        await page.wait_for_selector(".msg.assistant", timeout=_WAIT * 1000)
        assert await page.locator(".msg").count() == 2
