"""A fake Anthropic Messages API (W4/W5) and OpenAI Chat Completions API (W6): many concurrent
streams, paced by one shared timer.

``POST /v1/messages`` with ``"stream": true`` answers with Anthropic's streaming event sequence
(``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``/``text_delta`` ×
tokens, ``content_block_stop``, ``message_delta``, ``message_stop``) over chunked HTTP/1.1 with
keep-alive, so the official SDKs (and ssegate's fast path) read it as they would the real API.
``POST /v1/chat/completions`` with ``"stream": true`` answers with OpenAI's: ``chat.completion.chunk``
objects as ``data:`` lines (a role chunk, one content chunk per token, a finish chunk, a usage
chunk when ``stream_options.include_usage``), then ``data: [DONE]``.

Each delta's text is ``"t=<CLOCK_REALTIME µs> "``, stamped just before the socket write: the load
client turns it into token delivery latency (upstream write → viewer receipt).

Pacing: one timer for all streams (a heap of next-due times), not a task per stream, so the fake
itself stays cheap at thousands of streams. Written on asyncio.Protocol (uvloop when available).

Run: ``python -m bench.fake_anthropic_upstream --port 8090 [--tokens 500] [--rate 50]``.
On SIGTERM/SIGINT it prints one JSON line of stats (streams served, most live at once) and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import cast

# The real API sends its first delta after model latency; 20 ms keeps TTFT honest yet small.
FIRST_DELTA_DELAY_S = 0.020
# Timer granularity: a token is written at most this late; its stamp is taken at the write, so
# the lateness never leaks into the measured latency.
TICK_S = 0.001
MAX_HEAD_BYTES = 16384
# Most connections accepted per wake-up of the listening socket.
ACCEPT_BATCH = 128


def _event(name: str, payload: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@dataclass
class Stats:
    served: int = 0
    active: int = 0
    max_active: int = 0
    tokens_written: int = 0
    cancelled: int = 0


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    stream: _Stream = field(compare=False)


class _Stream:
    """One streaming answer in flight on one connection."""

    def __init__(self, conn: UpstreamProtocol, tokens: int, model: str, openai: bool, usage: bool) -> None:
        self.conn = conn
        self.left = tokens
        self.total = tokens
        self.model = model
        self.done = False
        # OpenAI's wire format (else Anthropic's); usage: OpenAI's trailing usage chunk
        self.openai = openai
        self.usage = usage
        self.created = int(time.time())


class Pacer:
    """The single timer: wakes when the earliest stream is due and writes every due token."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, stats: Stats) -> None:
        self.loop = loop
        self.interval = interval
        self.stats = stats
        self.heap: list[_Due] = []
        self.seq = itertools.count()
        self.handle: asyncio.Handle | None = None
        self.wake_at = 0.0  # uvloop's timer handles do not expose when()

    def add(self, stream: _Stream, at: float) -> None:
        heapq.heappush(self.heap, _Due(at, next(self.seq), stream))
        if self.handle is None or at < self.wake_at:
            if self.handle is not None:
                self.handle.cancel()
            self._schedule(at)

    def _schedule(self, at: float) -> None:
        self.wake_at = at
        self.handle = self.loop.call_at(at, self._tick)

    def _tick(self) -> None:
        self.handle = None
        now = self.loop.time()
        while self.heap and self.heap[0].at <= now + TICK_S / 2:
            due = heapq.heappop(self.heap)
            stream = due.stream
            if stream.done or stream.conn.transport is None:
                continue
            stream.conn.write_token(stream)
            if stream.left > 0:
                # schedule from the due time, not from now, so the rate holds under jitter
                heapq.heappush(self.heap, _Due(due.at + self.interval, next(self.seq), stream))
        if self.heap:
            self._schedule(max(self.heap[0].at, now + TICK_S))


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, pacer: Pacer, stats: Stats, tokens: int) -> None:
        self.pacer = pacer
        self.stats = stats
        self.tokens = tokens
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.stream: _Stream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.stream is not None and not self.stream.done:
            self._end_stream(self.stream)
            self.stats.cancelled += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and self.stream is None:
            if not self._handle_one_request():
                break

    def _handle_one_request(self) -> bool:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                self._respond_json(431, {"type": "error", "error": {"type": "invalid_request_error"}})
            return False
        head = bytes(self.buffer[:head_end]).decode("latin-1")
        lines = head.split("\r\n")
        method, path = ([*lines[0].split(" "), "", ""])[:2]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        if len(self.buffer) < head_end + 4 + length:
            return False
        body = bytes(self.buffer[head_end + 4 : head_end + 4 + length])
        del self.buffer[: head_end + 4 + length]
        self._route(method, path.split("?")[0], body)
        return True

    def _route(self, method: str, path: str, body: bytes) -> None:
        if method == "POST" and path == "/v1/chat/completions":
            self._route_openai(body)
            return
        if method != "POST" or path != "/v1/messages":
            self._respond_json(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})
            return
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self._respond_json(400, {"type": "error", "error": {"type": "invalid_request_error"}})
            return
        model = str(request.get("model") or "claude-fake")
        tokens = min(self.tokens, int(request.get("max_tokens") or self.tokens))
        if request.get("stream"):
            self._start_stream(model, tokens)
        else:
            text = " ".join(f"t={time.time_ns() // 1000}" for _ in range(tokens))
            self._respond_json(200, self._message(model, text, tokens))

    def _route_openai(self, body: bytes) -> None:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = None
        if not isinstance(request, dict) or not request.get("stream"):
            # W6 streams only; a non-streaming call is not part of any workload
            self._respond_json(400, {"error": {"type": "invalid_request_error", "message": "stream only"}})
            return
        model = str(request.get("model") or "gpt-fake")
        limit = request.get("max_completion_tokens") or request.get("max_tokens") or self.tokens
        options = request.get("stream_options")
        usage = isinstance(options, dict) and bool(options.get("include_usage"))
        self._start_stream(model, min(self.tokens, int(limit)), openai=True, usage=usage)

    @staticmethod
    def _message(model: str, text: str, output_tokens: int) -> dict[str, object]:
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}] if text else [],
            "stop_reason": "end_turn" if text else None,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": output_tokens},
        }

    def _respond_json(self, status: int, payload: dict[str, object]) -> None:
        assert self.transport is not None
        body = json.dumps(payload).encode()
        head = (
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "request-id: req_fake\r\n\r\n"
        )
        self.transport.write(head.encode() + body)

    def _start_stream(self, model: str, tokens: int, *, openai: bool = False, usage: bool = False) -> None:
        assert self.transport is not None
        self.stats.served += 1
        self.stats.active += 1
        self.stats.max_active = max(self.stats.max_active, self.stats.active)
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\nrequest-id: req_fake\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        stream = _Stream(self, tokens, model, openai, usage)
        opening = (
            _chunk_line(stream, {"role": "assistant", "content": ""}, None)
            if openai
            else _event("message_start", {"type": "message_start", "message": self._message(model, "", 1)})
            + _event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            + _event("ping", {"type": "ping"})
        )
        self.transport.write(head + _chunk(opening))
        self.stream = stream
        self.pacer.add(self.stream, self.pacer.loop.time() + FIRST_DELTA_DELAY_S)

    def write_token(self, stream: _Stream) -> None:
        assert self.transport is not None
        stamp = time.time_ns() // 1000
        # one pre-formatted write per token: the shape of a real delta, text carrying the stamp
        if stream.openai:
            delta = (
                b'data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":%d,"model":"%s",'
                b'"choices":[{"index":0,"delta":{"content":"t=%d "},"finish_reason":null}]}\n\n'
            ) % (stream.created, stream.model.encode(), stamp)
        else:
            delta = (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                b'"delta":{"type":"text_delta","text":"t=%d "}}\n\n' % stamp
            )
        stream.left -= 1
        self.stats.tokens_written += 1
        if stream.left > 0:
            self.transport.write(_chunk(delta))
            return
        closing = (
            delta + _openai_closing(stream)
            if stream.openai
            else (
                delta
                + _event("content_block_stop", {"type": "content_block_stop", "index": 0})
                + _event(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": stream.total},
                    },
                )
                + _event("message_stop", {"type": "message_stop"})
            )
        )
        self.transport.write(_chunk(closing) + b"0\r\n\r\n")
        self._end_stream(stream)
        # keep-alive: a pipelined next request may already be buffered
        if self.buffer:
            self.data_received(b"")

    def _end_stream(self, stream: _Stream) -> None:
        stream.done = True
        self.stream = None
        self.stats.active -= 1


def _chunk_line(stream: _Stream, delta: dict[str, object], finish: str | None) -> bytes:
    """One ``chat.completion.chunk`` as a ``data:`` line."""
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": stream.created,
        "model": stream.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: %s\n\n" % json.dumps(chunk, separators=(",", ":")).encode()


def _openai_closing(stream: _Stream) -> bytes:
    """The finish chunk, the usage chunk when asked for, and ``[DONE]``."""
    out = _chunk_line(stream, {}, "stop")
    if stream.usage:
        usage = {"prompt_tokens": 10, "completion_tokens": stream.total, "total_tokens": 10 + stream.total}
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": stream.created,
            "model": stream.model,
            "choices": [],
            "usage": usage,
        }
        out += b"data: %s\n\n" % json.dumps(chunk, separators=(",", ":")).encode()
    return out + b"data: [DONE]\n\n"


async def serve(host: str, port: int, tokens: int, rate: float) -> Stats:
    loop = asyncio.get_running_loop()
    stats = Stats()
    pacer = Pacer(loop, 1.0 / rate, stats)
    listening = socket.create_server((host, port), backlog=4096, reuse_port=False)
    listening.setblocking(False)
    opening: set[asyncio.Task[object]] = set()

    def accept_waiting() -> None:
        # Every waiting connection, not one per loop turn as libuv accepts: while the pacer writes
        # hundreds of tokens a tick, one per turn would hold new streams in the listen queue.
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            task = loop.create_task(
                loop.connect_accepted_socket(lambda: UpstreamProtocol(pacer, stats, tokens), conn)
            )
            opening.add(task)
            task.add_done_callback(opening.discard)

    loop.add_reader(listening.fileno(), accept_waiting)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"fake anthropic upstream on http://{host}:{port}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(listening.fileno())
        listening.close()
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--tokens", type=int, default=500, help="text deltas per answer")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second per stream")
    args = parser.parse_args(argv)
    try:
        import uvloop

        stats = uvloop.run(serve(args.host, args.port, args.tokens, args.rate))
    except ImportError:  # uvloop ships with uvicorn[standard]; plain asyncio also works
        stats = asyncio.run(serve(args.host, args.port, args.tokens, args.rate))
    print(json.dumps({"fake_upstream": stats.__dict__}), flush=True)


if __name__ == "__main__":
    main()
