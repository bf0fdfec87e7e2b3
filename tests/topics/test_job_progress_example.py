"""examples/job_progress: the job's events arrive, and the page's bar survives a reload."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.support.browser import chromium
from tests.support.servers import serve_asgi
from tests.topics.helpers import datas, subscribe

EXAMPLE = Path(__file__).parents[2] / "examples" / "job_progress"


def example_server() -> ModuleType:
    spec = importlib.util.spec_from_file_location("job_progress_server", EXAMPLE / "server.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def run_job(url: str, topic: str, steps: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, str(EXAMPLE / "job.py"), "--url", url, "--topic", topic),
        *("--steps", str(steps), "--delay", "0"),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


async def test_job_progress_example_reports_every_step_to_the_topic() -> None:
    app = example_server().with_page(create_app(Settings()))
    async with (
        serve_asgi(app) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        subscribe(client, "/v1/topics/jobs/t1/events") as stream,
    ):
        await run_job(url, "jobs/t1", steps=4)
        events = await stream.events(5)
    assert {e.event for e in events} == {"progress"}
    assert [d["percent"] for d in datas(events)] == [0, 25, 50, 75, 100]
    assert datas(events)[-1] == {"percent": 100, "stage": "finished", "state": "done"}


@pytest.mark.browser
async def test_job_progress_page_shows_the_bar_and_keeps_it_across_a_reload() -> None:
    app = example_server().with_page(create_app(Settings()))
    async with serve_asgi(app) as url, chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{url}/job?topic=jobs/page")
        await page.wait_for_function("document.getElementById('connection').textContent === 'live'")
        await run_job(url, "jobs/page", steps=3)
        await page.wait_for_function("document.body.dataset.state === 'done'")
        assert await page.eval_on_selector("#bar", "bar => bar.value") == 100
        await page.reload()
        # history=1 replays the latest progress event: the finished state shows again at once.
        await page.wait_for_function("document.body.dataset.state === 'done'")
        assert await page.text_content("#stage") == "finished"
        assert await page.eval_on_selector("#bar", "bar => bar.value") == 100
