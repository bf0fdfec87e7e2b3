"""Shortcut ``accept``: every pending connection accepted on each wake-up, not one per loop turn.

Relies on: uvicorn's ``Server.startup`` (what it sets up besides listening: ``server_state``,
``lifespan.state``, ``config.http_protocol_class``, ``servers``) and ``connect_accepted_socket``
driven without a task (uvloop's and asyncio's set the transport up before their first suspension).

libuv (under uvloop) accepts a single connection each time its loop polls the listening socket
(libuv 1.45 and later). A loop that is busy streaming takes milliseconds a turn, so new
connections queue in the kernel: under bench W4 (600 streams opened over 2 s) a turn took about
8 ms at the end of the ramp, the accept rate fell to ~125 a second against 300 arriving, and the
last streams' time to first token grew to 0.3–3 s with the CPU below 90 %. :class:`Acceptor`
takes the listening socket from libuv and accepts up to :data:`ACCEPT_BATCH` connections per
wake-up, as asyncio's own loop does, handing each to the loop as a transport of uvicorn's protocol.
Each connection is handed over as its own socket object, which the loop keeps for the transport's
lifetime (uvloop detaches it when libuv closes the descriptor).

:class:`Server` is uvicorn's server with its listening sockets served this way.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn

__all__ = ["ACCEPT_BATCH", "Acceptor", "Server", "startup"]

logger = logging.getLogger("ssegate.server")

# Most connections accepted per wake-up: the connections already open get the loop back after at
# most this many (a few hundred microseconds of work).
ACCEPT_BATCH = 128
# Out of file descriptors (or kernel memory): stop accepting this long and let the queue wait.
_PAUSE_WHEN_EXHAUSTED_S = 1.0
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Acceptor:
    """Accepts on one listening socket and opens each connection with ``protocol_factory``.

    Has what uvicorn asks of a server at shutdown (:meth:`close`, :meth:`wait_closed`). The socket
    is closed with it only if ``owns_socket``.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listening: socket.socket,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        *,
        owns_socket: bool = False,
    ) -> None:
        self._loop = loop
        self._listening = listening
        self._factory = protocol_factory
        self._owns_socket = owns_socket
        self._accepting = False
        self._closed = False
        listening.setblocking(False)
        self._resume()

    def close(self) -> None:
        """Stop accepting (connections already open are uvicorn's to shut down)."""
        if self._closed:
            return
        self._closed = True
        self._pause()
        if self._owns_socket:
            self._listening.close()

    async def wait_closed(self) -> None:
        """Nothing to wait for: closing stops accepting at once."""

    def _resume(self) -> None:
        if not self._closed and not self._accepting:
            self._loop.add_reader(self._listening.fileno(), self._accept_pending)
            self._accepting = True

    def _pause(self) -> None:
        if self._accepting:
            self._loop.remove_reader(self._listening.fileno())
            self._accepting = False

    def _accept_pending(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                connection, _ = self._listening.accept()
            except (BlockingIOError, InterruptedError):
                return  # the queue is empty
            except ConnectionAbortedError:
                continue  # the client gave up while it waited
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    logger.warning("ssegate: not accepting for %.0f s: %s", _PAUSE_WHEN_EXHAUSTED_S, exc)
                    self._pause()
                    self._loop.call_later(_PAUSE_WHEN_EXHAUSTED_S, self._resume)
                else:
                    logger.error("ssegate: accepting a connection failed: %s", exc)
                return
            self._open(connection)

    def _open(self, connection: socket.socket) -> None:
        """The loop's ``connect_accepted_socket``, run without a task: it sets the transport and
        protocol up before its first suspension, then only waits for ``connection_made``."""
        connection.setblocking(False)
        opening = self._loop.connect_accepted_socket(self._factory, connection)
        try:
            waiting = opening.send(None)
        except StopIteration:
            return
        except Exception as exc:  # the protocol could not be made: this connection only
            logger.error("ssegate: opening an accepted connection failed: %r", exc)
            connection.close()
            return
        # It waits on a future that connection_made resolves (uvloop's and asyncio's alike).
        waiting.add_done_callback(functools.partial(_finish_opening, opening))


def _finish_opening(opening: Coroutine[Any, Any, object], _connected: asyncio.Future[Any]) -> None:
    try:
        opening.send(None)
    except StopIteration:
        pass
    except Exception:  # the loop closed this transport already; nothing left to clean up
        logger.debug("ssegate: an accepted connection closed before it opened", exc_info=True)


async def startup(server: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
    """``server``'s start-up, its listening sockets served by an :class:`Acceptor` each.

    Start-up is uvicorn's (lifespan, then listening), with the sockets handed over: given ones stay
    the caller's to close; without any, the server binds ``config``'s address as uvicorn would.
    """
    await uvicorn.Server.startup(server, sockets=[])  # lifespan, state, no listening of its own
    owned = not sockets
    if not sockets:
        try:
            sockets = [server.config.bind_socket()]
        except SystemExit:  # uvicorn logged why (the address is taken, say)
            await server.lifespan.shutdown()
            raise
    config = server.config
    factory = functools.partial(
        config.http_protocol_class,  # type: ignore[call-arg]  # uvicorn's protocols take these
        config=config,
        server_state=server.server_state,
        app_state=server.lifespan.state,
    )
    loop = asyncio.get_running_loop()
    for sock in sockets:
        sock.listen(config.backlog)  # as the loop's create_server would (again is harmless)
    server.servers = [
        Acceptor(loop, sock, factory, owns_socket=owned)  # type: ignore[misc]
        for sock in sockets
    ]


class Server(uvicorn.Server):
    """uvicorn's server, its listening sockets served by an :class:`Acceptor` each (see :func:`startup`)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await startup(self, sockets)
