"""SIGTERM starts a drain before uvicorn's own shutdown, so streams end while it waits for them.

uvicorn installs its SIGTERM handler before the lifespan starts; we chain in front of it. Its
shutdown then closes the listening sockets and waits for open connections, which our drain has
already told to end; the lifespan's shutdown gives running generations ``drain_timeout``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType


def drain_on_sigterm(begin_drain: Callable[[], None]) -> Callable[[], None]:
    """Run ``begin_drain`` in the event loop on SIGTERM, then the previous handler. Returns an undo."""
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(begin_drain)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)

    def undo() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return undo
