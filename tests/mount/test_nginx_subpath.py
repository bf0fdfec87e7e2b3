"""ssegate under a sub-path of a site, behind real nginx configured by deploy/nginx-subpath.conf.

nginx strips ``/chat`` before passing requests on; ssegate (or the host app it is mounted in) is
told its public prefix with ``root_path``. Every URL it returns must work through nginx as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ssegate.config import Settings
from ssegate.mount import mount
from ssegate.server.app import create_app
from tests.deploy.nginx import nginx_in_front_of
from tests.support.servers import serve_asgi
from tests.support.sse import read_stream

pytestmark = pytest.mark.nginx

SUBPATH_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nginx-subpath.conf"
FAST = Settings(demo_ttft=0.01, demo_tokens_per_second=1000.0)
PROMPT = {"messages": [{"role": "user", "content": "Hello through nginx"}]}


async def check_through_nginx(backend: Any, api: str) -> None:
    """Start, stream, resume and read the page through nginx; ``api``: ssegate's public prefix."""
    async with (
        serve_asgi(backend, root_path="/chat") as direct_url,
        nginx_in_front_of([direct_url], config=SUBPATH_CONFIG) as proxy_url,
        httpx.AsyncClient(base_url=proxy_url, timeout=10) as client,
    ):
        created = await client.post(f"{api}/v1/generations", json=PROMPT)
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        assert location == f"{api}/v1/generations/{created.json()['id']}"
        described = (await client.get(location)).json()
        whole = await read_stream(client, "GET", described["events_url"])
        assert whole.status == 200
        assert whole.types[0] == "start"
        assert whole.types[-1] == "done"
        cut = whole.events[1].id
        assert cut is not None
        rest = await read_stream(client, "GET", described["events_url"], headers={"last-event-id": cut})
        assert [e.id for e in rest.events] == [e.id for e in whole.events[2:]]
        # The streaming POST's Location leads back through nginx too.
        streamed = await read_stream(
            client, "POST", f"{api}/v1/generations", json_body=PROMPT, headers={"accept": "text/event-stream"}
        )
        again = await read_stream(client, "GET", streamed.headers["location"])
        assert again.text == streamed.text
        assert again.text
        page = await client.get(f"{api}/")
        assert f'src="{api}/static/app.js"' in page.text
        assert (await client.get(f"{api}/static/app.js")).status_code == 200


async def test_standalone_ssegate_under_a_stripped_subpath() -> None:
    await check_through_nginx(create_app(FAST), "/chat")


async def test_mounted_ssegate_in_a_host_app_under_a_stripped_subpath() -> None:
    app = FastAPI()
    mount(app, "/sse", FAST)
    await check_through_nginx(app, "/chat/sse")
