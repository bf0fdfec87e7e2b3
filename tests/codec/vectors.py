"""The shared parsing vectors (tests/vectors/sse_parse_vectors.json), loaded as typed values."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

VECTORS_FILE = Path(__file__).parent.parent / "vectors" / "sse_parse_vectors.json"


@dataclass(frozen=True)
class ExpectedEvent:
    type: str
    data: str
    last_event_id: str


@dataclass(frozen=True)
class Vector:
    name: str
    chunks: list[bytes]
    events: list[ExpectedEvent]
    retry: int | None
    final_last_event_id: str

    @property
    def stream(self) -> bytes:
        return b"".join(self.chunks)


def _chunk(encoding: str, chunk: str) -> bytes:
    if encoding == "base64":
        return base64.b64decode(chunk)
    assert encoding == "utf-8", encoding
    return chunk.encode()


def load_vectors() -> list[Vector]:
    doc = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
    return [
        Vector(
            name=raw["name"],
            chunks=[_chunk(raw["encoding"], c) for c in raw["chunks"]],
            events=[ExpectedEvent(e["type"], e["data"], e["last_event_id"]) for e in raw["events"]],
            retry=raw["retry"],
            final_last_event_id=raw["final_last_event_id"],
        )
        for raw in doc["vectors"]
    ]
