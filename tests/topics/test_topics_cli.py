"""`ssegate publish` and `ssegate watch` against a real server, run as a user runs them."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from ssegate.cli import is_generation_stream
from tests.server.conftest import ServerFactory
from tests.topics.helpers import datas, subscribe


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ssegate", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_publish_prints_the_event_id_and_sends_json_data(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        url = str(client.base_url).rstrip("/")
        async with subscribe(client, "/v1/topics/ops/deploys/events") as stream:
            code, out, err = await run_cli(
                "publish", "ops/deploys", '{"version": 7}', "--event", "deploy", "--url", url
            )
            code2, out2, _ = await run_cli("publish", "ops/deploys", "plain words", "--url", url)
            events = await stream.events(2)
    assert code == 0, err
    assert code2 == 0
    assert [e.id for e in events] == [out.strip(), out2.strip()]
    assert events[0].event == "deploy"
    assert datas(events) == [{"version": 7}, "plain words"]


async def test_cli_publish_with_the_same_id_twice_prints_the_same_event_id(
    ssegate_server: ServerFactory,
) -> None:
    async with ssegate_server() as client:
        url = str(client.base_url).rstrip("/")
        first = await run_cli("publish", "once", "1", "--id", "k-1", "--url", url)
        again = await run_cli("publish", "once", "1", "--id", "k-1", "--url", url)
    assert first[0] == again[0] == 0
    assert first[1] == again[1]


async def test_cli_publish_reports_a_refused_event_in_one_line(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        code, _, err = await run_cli("publish", "t", "1", "--event", "reset", "--url", str(client.base_url))
    assert code == 1
    assert err.count("\n") == 1
    assert "reserved" in err


async def test_cli_watch_prints_a_topics_events_as_they_are_published(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        url = f"{str(client.base_url).rstrip('/')}/v1/topics/alerts/events?history=all"
        await client.post("/v1/topics/alerts/events", json={"data": {"level": "warn"}, "event": "alert"})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ssegate", "watch", url, "--json", stdout=asyncio.subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            first = json.loads(await proc.stdout.readline())
            await client.post("/v1/topics/alerts/events", json={"data": "second"})
            second = json.loads(await proc.stdout.readline())
        finally:
            proc.terminate()
            await proc.wait()
    assert (first["event"], first["data"]) == ("alert", {"level": "warn"})
    assert (second["event"], second["data"]) == ("message", "second")


async def _line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    """The next JSON line ``ssegate watch --json`` prints (it must still be running to print it)."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=10)
    assert line, f"watch ended early (exit status {await proc.wait()})"
    record: dict[str, Any] = json.loads(line)
    return record


async def test_cli_watch_keeps_following_a_topic_past_job_done_and_job_error_events(
    ssegate_server: ServerFactory,
) -> None:
    async with ssegate_server() as client:
        url = f"{str(client.base_url).rstrip('/')}/v1/topics/builds/events?history=all"
        # On a topic, a publisher's event types are not the end of anything ("done" and "error"
        # themselves are reserved: clients of the generation vocabulary end on them).
        await client.post("/v1/topics/builds/events", json={"data": {"job": 1}, "event": "job.done"})
        await client.post("/v1/topics/builds/events", json={"data": {"job": 2}, "event": "job.error"})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ssegate", "watch", url, "--json", stdout=asyncio.subprocess.PIPE
        )
        try:
            seen = [await _line(proc), await _line(proc)]
            await client.post("/v1/topics/builds/events", json={"data": {"job": 3}, "event": "job.done"})
            seen.append(await _line(proc))
        finally:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()
    assert [(r["event"], r["data"]) for r in seen] == [
        ("job.done", {"job": 1}),
        ("job.error", {"job": 2}),
        ("job.done", {"job": 3}),
    ]


async def test_cli_watch_ends_a_generation_stream_at_its_done_event(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        created = await client.post(
            "/v1/generations", json={"messages": [{"role": "user", "content": "hello"}]}
        )
        assert created.status_code == 201
        url = f"{str(client.base_url).rstrip('/')}{created.json()['events_url']}"
        code, out, err = await asyncio.wait_for(run_cli("watch", url, "--json"), timeout=30)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["event"] == "start"
    assert records[-1]["event"] == "done"
    assert [r["event"] for r in records].count("done") == 1


@pytest.mark.parametrize(
    ("url", "ends_at_done"),
    [
        ("http://127.0.0.1:8000/v1/generations/abc123/events", True),
        ("http://127.0.0.1:8000/v1/generations/abc123/events?token=x&last_event_id=5", True),
        ("https://app.example/api/v1/generations/abc123/events", True),
        ("http://127.0.0.1:8000/v1/generations/abc123", False),
        ("http://127.0.0.1:8000/v1/topics/news/events", False),
        ("http://127.0.0.1:8000/v1/topics/events?topic=a&topic=b", False),
        # A topic may be named like a generation path; it is still a topic.
        ("http://127.0.0.1:8000/v1/topics/v1/generations/abc123/events", False),
        ("http://127.0.0.1:8000/v1/generations/abc123/events/more", False),
    ],
)
def test_cli_watch_treats_done_and_error_as_the_end_on_generation_streams_only(
    url: str, ends_at_done: bool
) -> None:
    assert is_generation_stream(url) is ends_at_done
