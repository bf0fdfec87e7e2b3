"""What both fake vendors share: a queue of scripts, the faults, the pacing and what a test observes.

A vendor module turns a script into *frames* (the bytes of one SSE event each, flagged when the
frame carries a content delta); this module sends them, and on the way acts out the script's
fault at the right place: after N deltas, answer an error event, stall, or drop the connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

from tests.fakes._http import FakeRequest, RawHTTPServer, Responder

SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}


@dataclass(frozen=True, slots=True)
class Frame:
    data: bytes
    is_delta: bool = False


@dataclass(frozen=True, slots=True)
class Faults:
    """Misbehaviour of one response. ``*_after`` count content deltas already sent."""

    status: int | None = None  # answer this HTTP error status (vendor JSON body) before any byte
    silent: bool = False  # read the request, then send nothing at all (not even a status line)
    error_after: int | None = None  # then send the vendor's mid-stream error event and end
    stall_after: int | None = None  # then send nothing until the client hangs up
    drop_after: int | None = None  # then cut the connection (truncated chunked body)
    end_after: int | None = None  # then end the body cleanly, without the vendor's final event
    garble_after: int | None = None  # then send a chunk whose size is not hex, and hold on
    garbage_after: int | None = None  # then send a well-framed event with ``garbage`` as data, and hold on
    garbage: bytes = b"<html>502 Bad Gateway</html>"  # not JSON, or JSON the vendor never sends
    interval: float = 0.0  # seconds between deltas, when no shared clock paces them
    gzip: bool = False  # send the body gzip-compressed (content-encoding: gzip), flushed per event


class SharedClock:
    """One timer for every stream: each tick wakes all the streams waiting for it (benchmarks)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._tick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def wait(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        await self._tick.wait()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            tick, self._tick = self._tick, asyncio.Event()
            tick.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


ScriptT = TypeVar("ScriptT")


class FakeUpstream(Generic[ScriptT]):
    """A vendor's API on a real socket; subclasses say what the vendor's bytes look like."""

    def __init__(self, script: ScriptT, *, clock: SharedClock | None = None) -> None:
        self.default_script = script
        self.queued: collections.deque[ScriptT] = collections.deque()
        self.clock = clock
        self.requests: list[FakeRequest] = []
        self.stream_started = asyncio.Event()  # the first event of a 200 answer was sent
        self.client_closed_early = asyncio.Event()  # the client hung up before the answer ended
        self.completed = 0  # answers sent to the end (a normal stop or an error event)
        self.deltas_sent = 0  # content deltas sent, over every answer
        self._delta_sent = asyncio.Event()  # set (and replaced) at every delta sent
        self._server = RawHTTPServer(self._handle)
        self.url = ""

    @property
    def connections_accepted(self) -> int:
        return self._server.connections_accepted

    async def until_accepted(self, count: int) -> None:
        await self._server.until_accepted(count)

    async def until_deltas(self, count: int) -> None:
        """Wait until ``count`` content deltas have been sent in all (bound it with a timeout)."""
        while self.deltas_sent < count:
            await self._delta_sent.wait()

    def then(self, *scripts: ScriptT) -> None:
        """Answer the next requests with these scripts, in order, then with the default again."""
        self.queued.extend(scripts)

    async def __aenter__(self) -> Self:
        self.url = await self._server.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._server.aclose()
        if self.clock is not None:
            await self.clock.aclose()

    async def serve_forever(self, port: int) -> None:
        self.url = await self._server.start(port)
        await asyncio.Event().wait()

    # What a vendor module supplies.
    def faults(self, script: ScriptT) -> Faults:
        raise NotImplementedError

    def error_body(self, status: int, script: ScriptT) -> dict[str, Any]:
        raise NotImplementedError

    def frames(self, request: FakeRequest, script: ScriptT) -> Iterable[Frame]:
        raise NotImplementedError

    def error_frame(self, script: ScriptT) -> bytes:
        raise NotImplementedError

    def garbage_frame(self, script: ScriptT, data: bytes) -> bytes:
        """A well-framed SSE event carrying ``data`` where the vendor's JSON belongs."""
        return b"data: " + data + b"\n\n"

    def request_problem(self, request: FakeRequest) -> str | None:
        """What the vendor's API would refuse in this request (answered 400), or ``None``."""
        return None

    async def _handle(self, request: FakeRequest, responder: Responder) -> None:
        self.requests.append(request)
        script = self.queued.popleft() if self.queued else self.default_script
        faults = self.faults(script)
        problem = self.request_problem(request)
        if problem is not None:
            body = self.error_body(400, script)
            body["error"]["message"] = problem
            await responder.json(400, body, {"request-id": "req_fake"})
            return
        if faults.silent:
            responder.watch_for_hang_up()
            await responder.wait_client_gone()
            self.client_closed_early.set()
            return
        if faults.status is not None:
            # A tiny retry-after keeps SDK retries (when a test allows them) from sleeping a second.
            headers = {"request-id": "req_fake", "retry-after-ms": "1"}
            await responder.json(faults.status, self.error_body(faults.status, script), headers)
            return
        headers = {**SSE_HEADERS, "request-id": "req_fake"}
        if faults.gzip:
            headers["content-encoding"] = "gzip"
        await responder.start(200, headers)
        try:
            finished = await self._stream(request, script, faults, responder)
        except ConnectionError:
            # The client hung up while a frame was being written (before the watcher saw EOF).
            self.client_closed_early.set()
            return
        if finished:
            await responder.end()
            self.completed += 1
        elif responder.client_gone.is_set():
            self.client_closed_early.set()

    async def _stream(
        self, request: FakeRequest, script: ScriptT, faults: Faults, responder: Responder
    ) -> bool:
        """Send the frames; False when the answer did not end normally."""
        deltas = 0
        checked = -1
        compressor = zlib.compressobj(wbits=31) if faults.gzip else None
        for frame in self.frames(request, script):
            if frame.is_delta or deltas != checked:
                checked = deltas
                if deltas == faults.error_after:
                    await responder.send(self.error_frame(script))
                    return True
                if deltas == faults.stall_after:
                    await responder.wait_client_gone()
                    return False
                if deltas == faults.drop_after:
                    responder.abort()
                    return False
                if deltas == faults.end_after:
                    await responder.end()
                    return False
                if deltas == faults.garbage_after:
                    await responder.send(self.garbage_frame(script, faults.garbage))
                    await responder.wait_client_gone()
                    return False
                if deltas == faults.garble_after:
                    await responder.send_raw(b"zz\r\nnot a chunk\r\n")
                    await responder.wait_client_gone()
                    return False
            if frame.is_delta:
                if not await self._pace(faults, responder):
                    return False
                deltas += 1
            if responder.client_gone.is_set():
                return False
            data = frame.data
            if compressor is not None:
                data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            await responder.send(data)
            self.stream_started.set()
            if frame.is_delta:
                self.deltas_sent += 1
                sent, self._delta_sent = self._delta_sent, asyncio.Event()
                sent.set()
        if compressor is not None:
            await responder.send(compressor.flush())
        return True

    async def _pace(self, faults: Faults, responder: Responder) -> bool:
        if self.clock is not None:
            await self.clock.wait()
        elif faults.interval > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(responder.wait_client_gone(), faults.interval)
        return not responder.client_gone.is_set()
