"""Micro-benchmark of the SSE codec's hot path (not a test): ``python bench/codec_micro.py``.

Prints operations per second for encoding a typical LLM token event (~100 bytes of JSON data, a
type and an id), for multi-line data (the slow path), and for parsing the encoded stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from ssegate.codec import Event, EventStreamParser, encode_event

TOKEN_EVENT = Event(
    data=json.dumps(
        {"delta": "Hello, this is one token of a longer streamed answer", "index": 0, "model": "demo-1"}
    ),
    event="text",
    id="1718000000000-42",
)
MULTILINE_EVENT = Event(data="line one\nline two\r\nline three", event="text", id="1718000000000-43")


def ops_per_second(operation: Callable[[], object], seconds: float = 1.0) -> float:
    """Run ``operation`` in batches for about ``seconds``; return the rate of the best batch."""
    batch, best = 10_000, 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(batch):
            operation()
        best = max(best, batch / (time.perf_counter() - start))
    return best


def parse_rate(events: int = 100_000) -> float:
    stream = encode_event(TOKEN_EVENT) * events
    # Network-sized chunks, so the per-chunk cost is counted as it would be in a real client.
    chunks = [stream[i : i + 16_384] for i in range(0, len(stream), 16_384)]
    parser = EventStreamParser()
    start = time.perf_counter()
    parsed = 0
    for chunk in chunks:
        parsed += len(parser.feed(chunk))
    assert parsed == events
    return events / (time.perf_counter() - start)


def main() -> None:
    size = len(TOKEN_EVENT.data.encode())
    rates = [
        (f"encode_event, JSON data ({size} B)", ops_per_second(lambda: encode_event(TOKEN_EVENT)), "ops/s"),
        ("encode_event, 3-line data", ops_per_second(lambda: encode_event(MULTILINE_EVENT)), "ops/s"),
        ("EventStreamParser.feed, 16 KiB chunks", parse_rate(), "events/s"),
    ]
    for label, rate, unit in rates:
        print(f"{label:<40}{rate:>12,.0f} {unit}")


if __name__ == "__main__":
    main()
