"""Stream slots counted in Redis, so that N processes enforce a concurrent-stream limit once.

Each limit (one principal's streams, or all streams) is one hash tag, so its two keys live in one
Redis Cluster slot: ``held``, a hash of process id -> the streams that process holds, and
``alive``, a sorted set of process id -> its lease's expiry (Redis's clock). Taking a slot drops
the processes whose lease ran out (a crashed worker's slots free themselves within one lease),
adds the others up, and counts one more for this process only if that stays within the limit:
one script, so two processes can never both take the last slot. Releasing counts one less. Every
``ttl / 3`` each process renews its leases and sets its counts to what it really holds, which
also repairs what an outage or a lost reply left wrong.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

# KEYS: held, alive. ARGV: limit, process, lease ms. Returns {1, held} taken, {0, held} full.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('HDEL', KEYS[1], gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = 0
for _, n in ipairs(redis.call('HVALS', KEYS[1])) do held = held + tonumber(n) end
if held >= tonumber(ARGV[1]) then return {0, held} end
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {1, held + 1}
"""

# KEYS: held. ARGV: process.
_GIVE_BACK = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""

# KEYS: held, alive. ARGV: process, what it holds, lease ms.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
  if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1
"""


def _keys(limit: str) -> list[str]:
    # Hashed: a principal's name is not a key part (any bytes, any length); one tag, one slot.
    tag = hashlib.sha1(limit.encode()).hexdigest()[:20]
    return [f"ssegate:{{slots:{tag}}}:held", f"ssegate:{{slots:{tag}}}:alive"]


# The scripts, by the names the log runs them by (it loads them with its own).
SCRIPTS = {"slots_take": _TAKE, "slots_give_back": _GIVE_BACK, "slots_renew": _RENEW}
# How the log runs one: (name, keys, args) -> its reply (every script here names one slot's keys).
RunScript = Callable[[str, list[str], list[str | int | float]], Awaitable[Any]]


class RedisSlots:
    """Concurrent-stream slots shared by every process using one Redis (see the module), run by
    the log's ``run`` (on one Redis, with its appends; a :class:`~ssegate.errors.LogError` when
    Redis fails)."""

    def __init__(self, run: RunScript) -> None:
        self._run = run

    async def take(self, limit_key: str, limit: int, process: str, ttl: float) -> bool:
        """One slot of ``limit_key`` for ``process`` if fewer than ``limit`` are held by every
        live process together; False (nothing counted) when they are all taken."""
        taken, _held = await self._run("slots_take", _keys(limit_key), [limit, process, _ms(ttl)])
        return bool(taken)

    async def give_back(self, limit_key: str, process: str) -> None:
        await self._run("slots_give_back", _keys(limit_key)[:1], [process])

    async def renew(self, holding: Mapping[str, int], process: str, ttl: float) -> None:
        """Renew ``process``'s lease on every limit it holds slots of, its counts set to
        ``holding`` (0: it holds none there any more). One call per limit, all at once (each
        limit is its own slot under a cluster)."""
        await asyncio.gather(
            *(
                self._run("slots_renew", _keys(limit_key), [process, count, _ms(ttl)])
                for limit_key, count in holding.items()
            )
        )


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
