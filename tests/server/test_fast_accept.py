"""The acceptor: a busy event loop takes every waiting connection at once, not one per turn.

Run on uvloop, the loop ``ssegate serve`` runs on (libuv accepts a single connection per poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from ssegate._fast.accept import ACCEPT_BATCH, Acceptor
from tests.support.servers import bound_socket

WAITING = 50


def _on_uvloop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


class _Counted(asyncio.Protocol):
    opened: list[asyncio.BaseTransport]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.opened.append(transport)


def _counting_factory(opened: list[asyncio.BaseTransport]) -> Callable[[], asyncio.Protocol]:
    def make() -> asyncio.Protocol:
        protocol = _Counted()
        protocol.opened = opened
        return protocol

    return make


@contextlib.contextmanager
def _waiting_connections(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.Protocol],
    opened: list[asyncio.BaseTransport],
    count: int,
) -> Iterator[list[socket.socket]]:
    """An acceptor on a new socket and ``count`` connections waiting in its listen queue (their
    client sockets are yielded); all closed on exit, with the transports the factory's protocols
    put in ``opened``."""
    listening = bound_socket()
    acceptor = Acceptor(loop, listening, factory, owns_socket=True)
    # Blocking connects: each returns once the kernel finished the handshake, so all of them
    # wait in the listen queue before the loop runs again.
    clients = [socket.create_connection(listening.getsockname()) for _ in range(count)]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()
        for transport in opened:
            transport.close()
        acceptor.close()


async def _turns_until(loop: asyncio.AbstractEventLoop, done: Callable[[], bool], most: int) -> int:
    """Turns of the loop (each a chain of call_soon) until ``done()``; ``most`` + 1 if never."""
    finished: asyncio.Future[int] = loop.create_future()
    turns = 0

    def turn() -> None:
        nonlocal turns
        turns += 1
        if done() or turns > most:
            finished.set_result(turns)
        else:
            loop.call_soon(turn)

    loop.call_soon(turn)
    return await finished


def test_every_waiting_connection_is_accepted_within_a_few_turns() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        opened: list[asyncio.BaseTransport] = []
        with _waiting_connections(loop, _counting_factory(opened), opened, WAITING):
            turns = await _turns_until(loop, lambda: len(opened) == WAITING, most=WAITING)
            # libuv's own accepting needs a turn per connection (WAITING turns and more).
            assert len(opened) == WAITING
            assert turns <= 5

    _on_uvloop(main)


def test_one_wake_up_accepts_at_most_a_batch_and_the_rest_on_the_next() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        opened: list[asyncio.BaseTransport] = []
        made_before_the_loop_moved_on: list[int] = []
        count_opened = _counting_factory(opened)
        made = 0

        def factory() -> asyncio.Protocol:
            nonlocal made
            made += 1
            if made == 1:  # runs once the wake-up that accepted this connection has returned
                loop.call_soon(lambda: made_before_the_loop_moved_on.append(made))
            return count_opened()

        waiting = ACCEPT_BATCH + 10
        with _waiting_connections(loop, factory, opened, waiting):
            await _turns_until(loop, lambda: len(opened) == waiting, most=20)
            # the established connections get the loop back after a batch; the rest come next
            assert made_before_the_loop_moved_on == [ACCEPT_BATCH]
            assert len(opened) == waiting

    _on_uvloop(main)


def test_a_closed_acceptor_that_owns_its_socket_refuses_new_connections() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        listening = bound_socket()
        address = listening.getsockname()
        acceptor = Acceptor(loop, listening, _counting_factory([]), owns_socket=True)
        acceptor.close()
        acceptor.close()  # twice is harmless
        await acceptor.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=5).close()

    _on_uvloop(main)


def test_a_closed_acceptor_leaves_a_given_socket_open_and_unserved() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        opened: list[asyncio.BaseTransport] = []
        listening = bound_socket()
        acceptor = Acceptor(loop, listening, _counting_factory(opened))
        acceptor.close()
        client = socket.create_connection(listening.getsockname())  # queued by the kernel
        try:
            turns = await _turns_until(loop, lambda: bool(opened), most=20)
            assert turns > 20  # nobody accepts any more
            assert not opened
            assert listening.fileno() >= 0  # still the caller's to close
        finally:
            client.close()
            listening.close()

    _on_uvloop(main)


class _Echo(_Counted):
    transport: Any  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_on_uvloop_each_connection_gets_its_own_socket_and_its_descriptor_is_closed_once() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        opened: list[asyncio.BaseTransport] = []
        count = 20

        def factory() -> asyncio.Protocol:
            protocol = _Echo()
            protocol.opened = opened
            return protocol

        with _waiting_connections(loop, factory, opened, count) as clients:
            await _turns_until(loop, lambda: len(opened) == count, most=50)
            assert len(opened) == count
            all_open = _open_descriptors()
            # One socket object per connection, none shared (a stand-in shared by every
            # connection would send one client's bytes to another's descriptor if the loop ever
            # read it later), each on its own descriptor.
            served = _server_sockets(clients)
            assert len(served) == count
            assert len({s.fileno() for s in served}) == count
            # The descriptors work: each echoes (non-blocking, or the loop would stall here).
            for client in clients:
                client.settimeout(10)
                client.sendall(b"ping")
            replies = await asyncio.gather(*(asyncio.to_thread(c.recv, 4) for c in clients))
            assert replies == [b"ping"] * count
            # Half closed by the server, half by their clients: every descriptor goes, once.
            for transport in opened[: count // 2]:
                transport.close()
            for client in clients[count // 2 :]:
                client.close()
            # gone: the half the server closed, and both ends of the half the clients closed
            left = all_open - count // 2 - 2 * (count // 2)
            await _turns_until(loop, lambda: _open_descriptors() == left, most=200)
            assert _open_descriptors() == left
            # uvloop detached the server's socket objects of closed transports: none closes a
            # descriptor number a later connection may have been given
            closed = served[: count // 2]
            assert all(s.fileno() == -1 for s in closed)

    _on_uvloop(main)


def _server_sockets(clients: list[socket.socket]) -> list[socket.socket]:
    """The server's socket objects of ``clients``' connections, in the clients' order."""
    gc.collect()
    ends = {c.getsockname(): None for c in clients}
    by_peer: dict[Any, list[socket.socket]] = {}
    for o in gc.get_objects():
        if isinstance(o, socket.socket) and o not in clients and o.fileno() >= 0:
            with contextlib.suppress(OSError):
                if (peer := o.getpeername()) in ends:
                    by_peer.setdefault(peer, []).append(o)
    return [s for c in clients for s in by_peer.get(c.getsockname(), [])]
