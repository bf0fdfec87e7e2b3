"""The event log: ordered, retained, resumable streams (memory for one process, Redis for many)."""

from __future__ import annotations

from ssegate.errors import SettingsError
from ssegate.log.base import EventLog, LogEntry, ReadResult, Retention
from ssegate.log.memory import MemoryEventLog

__all__ = ["EventLog", "LogEntry", "MemoryEventLog", "ReadResult", "Retention", "open_event_log"]


def open_event_log(url: str | None) -> EventLog:
    """The log at ``url``: ``None`` or ``"memory"`` for this process's memory, ``redis://...`` for Redis
    (one server or any node of a cluster), ``redis+sentinel://...`` for a Sentinel-managed Redis."""
    if url is None or url == "memory":
        return MemoryEventLog()
    if url.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")):
        # Imported here so a memory-only process never loads the Redis client.
        from ssegate.log.redis import RedisEventLog

        return RedisEventLog(url)
    raise SettingsError(f"unknown event log URL {url!r}: use 'memory' or 'redis://host:port/db'")
