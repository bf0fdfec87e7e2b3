"""SIGTERM (and Ctrl-C's SIGINT) starts a drain before uvicorn's own shutdown, so streams end
while it waits for them.

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
    """Run ``begin_drain`` in the event loop on SIGTERM or SIGINT, then the previous handler.

    Returns an undo. Without it, open streams would hold uvicorn's shutdown until its graceful
    timeout and then be cancelled mid-write.
    """
    loop = asyncio.get_running_loop()
    undos = [_chain(signum, loop, begin_drain) for signum in (signal.SIGTERM, signal.SIGINT)]

    def undo() -> None:
        for undo_one in undos:
            undo_one()

    return undo


def _chain(
    signum: signal.Signals, loop: asyncio.AbstractEventLoop, begin_drain: Callable[[], None]
) -> Callable[[], None]:
    previous = signal.getsignal(signum)

    def on_signal(received: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(begin_drain)
        if callable(previous):
            previous(received, frame)

    signal.signal(signum, on_signal)

    def undo() -> None:
        if signal.getsignal(signum) is on_signal:
            signal.signal(signum, previous)

    return undo
