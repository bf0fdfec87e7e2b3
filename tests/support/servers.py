"""Run a real ASGI server on 127.0.0.1 with a kernel-chosen port, inside the test's event loop.

Streaming tests need real sockets: httpx's ASGITransport and Starlette's TestClient buffer whole
bodies, so an endless event stream would never arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from ssegate.server.app import App
from ssegate.server.main import ListeningServer, served, uvicorn_options


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it: without it, Nagle + delayed ACKs add ~40 ms to every response.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, **config: Any) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends; yields its base URL (``http://127.0.0.1:PORT``).

    ssegate's own app is served as ``ssegate serve`` serves it (see ssegate.server.main): with the
    fast paths where they are on, on stock uvicorn where they are off.
    """
    sock = bound_socket()
    port = sock.getsockname()[1]
    server_class = uvicorn.Server
    if isinstance(app, App):
        app = served(app)
        config = {**uvicorn_options(), **config}
        server_class = ListeningServer  # accepting as ssegate serve does
    server = server_class(
        uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1, **config)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raise the start-up failure
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
