"""SIGTERM (and Ctrl-C's SIGINT) drains the process, and only then lets uvicorn shut down.

uvicorn installs its signal handlers before the lifespan starts; we chain in front of them. On the
first signal the app's drain runs while the process still listens: ``/readyz`` answers 503 (load
balancers stop routing here), new streams and generations get 503 with ``Retry-After``, running
generations finish or end with a terminal event their viewers receive. Then uvicorn's shutdown
starts as its own handler would start it (it closes the listener, waits for connections, runs the
lifespan's shutdown) but without re-raising the signal at exit: a drained process exits 0. A second
signal during the drain hands over to uvicorn's handler at once (an impatient operator).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

logger = logging.getLogger("ssegate.server")

Drain = Callable[[signal.Signals], Awaitable[None]]


def drain_on_sigterm(drain: Drain) -> Callable[[], None]:
    """Run ``drain(signal)`` in the event loop on SIGTERM or SIGINT, then stop the server.

    Returns an undo.
    """
    return _Drainer(asyncio.get_running_loop(), drain).install((signal.SIGTERM, signal.SIGINT))


class _Drainer:
    def __init__(self, loop: asyncio.AbstractEventLoop, drain: Drain) -> None:
        self._loop = loop
        self._drain = drain
        self._previous: dict[signal.Signals, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._signalled = False

    def install(self, signums: tuple[signal.Signals, ...]) -> Callable[[], None]:
        for signum in signums:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

        def undo() -> None:
            for signum, previous in self._previous.items():
                if signal.getsignal(signum) == self._on_signal:
                    signal.signal(signum, previous)

        return undo

    def _on_signal(self, received: int, frame: FrameType | None) -> None:
        signum = signal.Signals(received)
        if self._signalled:  # a second signal: no more waiting
            self._hand_over(signum, frame)
            return
        self._signalled = True
        self._loop.call_soon_threadsafe(self._start, signum)

    def _start(self, signum: signal.Signals) -> None:
        self._task = self._loop.create_task(self._run(signum), name="ssegate-drain")

    async def _run(self, signum: signal.Signals) -> None:
        try:
            await self._drain(signum)
        except Exception:
            logger.exception("the drain failed; shutting down")
        finally:
            self._stop(signum)

    def _stop(self, signum: signal.Signals) -> None:
        """Start uvicorn's shutdown as its handler does, minus the signal's re-raise at exit."""
        previous = self._previous.get(signum)
        server = getattr(previous, "__self__", None)
        if server is not None and hasattr(server, "should_exit"):
            server.should_exit = True
        else:
            self._hand_over(signum, None)

    def _hand_over(self, signum: signal.Signals, frame: FrameType | None) -> None:
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
