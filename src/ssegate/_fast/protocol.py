"""Shortcut ``slim_protocol``: uvicorn's httptools protocol, keeping less per held connection.

Relies on: the attributes uvicorn's ``HttpToolsProtocol`` sets up per connection and per request
(``pipeline``, ``flow._is_writable_event``, ``cycle.message_event``, ``server``, ``client``),
each swapped only when it has the type this was written against.

An idle subscriber is mostly memory the server keeps for its connection (bench W3). In stock
uvicorn three empty ``collections.deque`` objects are about 2.2 KiB of each connection's 13 KiB
(tracemalloc): the waiter queues of two ``asyncio.Event`` (request body / disconnect, and write
flow control) and the queue of pipelined requests. Each usually holds nothing or one item, so
:class:`SlimEvent` and a list do the same job here. Everything else is uvicorn's own code: this
class only swaps those three objects in after uvicorn made them, before anything waits on them,
and shares the address objects that are the same for many connections.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class SlimEvent:
    """What uvicorn uses of :class:`asyncio.Event` (``set``, ``clear``, ``is_set``, awaiting
    ``wait()``), with its waiters in a list made on the first wait instead of an always-present
    deque. ``wait()`` returns a future rather than a coroutine: one frame less for a waiter held
    for hours."""

    __slots__ = ("_is_set", "_waiters")

    def __init__(self, *, is_set: bool = False) -> None:
        self._is_set = is_set
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        if self._is_set:
            return
        self._is_set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._is_set = False

    def wait(self) -> Awaitable[bool]:
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._is_set:
            waiter.set_result(True)
            return waiter
        waiters = self._waiters
        if waiters is None:
            self._waiters = [waiter]
        else:
            # A waiter cancelled while waiting (its task was) is dropped here, not left to pile up.
            waiters[:] = [w for w in waiters if not w.done()]
            waiters.append(waiter)
        return waiter


class _Pipeline(list[Any]):
    """The pipelined-requests queue as a list: uvicorn only ever appends left and pops right."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class SlimHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol with :class:`SlimEvent` and a list in place of its deques."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = _Pipeline()  # type: ignore[assignment]

    # Every connection through one listening socket has the same local address: one tuple for all.
    _local_address: tuple[str, int | None] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.server is not None:
            if self.server == SlimHttpToolsProtocol._local_address:
                self.server = SlimHttpToolsProtocol._local_address
            else:
                SlimHttpToolsProtocol._local_address = self.server
        if self.client is not None:
            # Behind a proxy every peer has the proxy's address: one string, not one each.
            self.client = (sys.intern(self.client[0]), self.client[1])
        flow = self.flow
        if type(getattr(flow, "_is_writable_event", None)) is asyncio.Event:
            # Writable until the transport says otherwise, as uvicorn's own starts out.
            flow._is_writable_event = SlimEvent(is_set=True)  # type: ignore[assignment]

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # uvicorn just made this request's cycle (its task has not run yet, so nothing waits on
        # the event); an upgrade request returns early and leaves an older, already slim cycle.
        cycle = self.cycle
        if cycle is not None and type(cycle.message_event) is asyncio.Event:
            cycle.message_event = SlimEvent(is_set=cycle.message_event.is_set())  # type: ignore[assignment]
