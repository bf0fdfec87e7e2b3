"""Sans-IO Server-Sent Events codec: bytes in, events out; events in, bytes out.

Standard library only: no asyncio, no sockets (``tests/codec/test_sans_io.py`` keeps it honest).
"""

from ssegate.codec.encoder import encode_comment, encode_event, encode_retry
from ssegate.codec.events import Comment, Event, Retry
from ssegate.codec.parser import EventStreamParser

__all__ = [
    "Comment",
    "Event",
    "EventStreamParser",
    "Retry",
    "encode_comment",
    "encode_event",
    "encode_retry",
]
