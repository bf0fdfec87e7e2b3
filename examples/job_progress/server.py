"""ssegate plus the progress page, on one origin (so EventSource needs no CORS).

    python examples/job_progress/server.py             # http://127.0.0.1:8000/job?topic=jobs/demo

Everything but ``/job`` is ssegate itself. In your own deployment, serve the page from wherever
your pages live and route ``/v1/topics/`` to ssegate on the same origin (or allow your origin in
ssegate's CORS settings).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.responses import FileResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ssegate.config import Settings
from ssegate.server.app import create_app

PAGE = Path(__file__).with_name("index.html")


def with_page(ssegate: ASGIApp) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/job":
            await FileResponse(PAGE, headers={"cache-control": "no-cache"})(scope, receive, send)
        else:
            await ssegate(scope, receive, send)  # lifespan included

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(with_page(create_app(Settings.from_env())), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
