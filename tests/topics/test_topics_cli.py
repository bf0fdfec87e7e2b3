"""`ssegate publish` and `ssegate watch` against a real server, run as a user runs them."""

from __future__ import annotations

import asyncio
import json
import sys

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
