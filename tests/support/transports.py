"""A client socket for the fan-out's unit tests: it keeps what the group writes."""

from __future__ import annotations


class RecordingTransport:
    """The three transport calls the fan-out makes, with the bytes kept."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.written += data
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0
