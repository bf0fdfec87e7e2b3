"""The shared event log on Redis Streams: several processes or machines, one truth.

This module and :mod:`ssegate.log.redis_connect` (which Redis a URL names: one server, a Redis
Cluster, Sentinel) are the only ones that import ``redis``; every Redis failure becomes
:class:`ssegate.errors.LogError` here. The client speaks RESP2 (pinned: ``XREAD`` replies differ
between protocols), never retries a command on its own on one Redis or Sentinel (the cluster client
does, after a connection error; appends are idempotent so that cannot land one twice), and
redis-py drops a connection on any ``BaseException`` mid-command, cancellation included, so a
half-read reply is never reused.

Keys of one stream share the hash tag ``{<stream>}`` so Redis Cluster keeps them in one slot, and
every script names the keys of one stream only (no command spans two slots)::

    ssegate:{<stream>}:log             STREAM  id 0-<seq>; fields t (ms), ev, d, ep (epoch), x=1 if terminal
    ssegate:{<stream>}:state           HASH    epoch, seq (last appended), closed, max_events, max_age_ms,
                                               by (last appender), w:<process> (its last append), rx
    ssegate:{<stream>}:meta            HASH    caller's metadata (set_meta / get_meta)
    ssegate:{<stream>}:members:<role>  ZSET    member -> expiry time (ms, Redis clock)
    ssegate:wake:<instance>            STREAM  one entry; nudges this process's reader (see below)
    ssegate:{<stream>}:wake:<instance> STREAM  the same, under a cluster: one per followed slot
    ssegate:{limit:<sha1>}:hits        ZSET    a shared rate limit's window (its own slot)

Sequence numbers are ours, not Redis's: the state hash counts them and the append script writes
the entry with the explicit id ``0-<seq>``, so a cursor maps to a Redis id without lookup and the
earliest retained seq is known exactly. Every write is a Lua script, atomic on the server: append
checks the stream exists and is open, increments ``seq``, ``XADD``s with ``MAXLEN ~`` (cheap,
approximate trimming), marks ``closed`` for a terminal event (so exactly one terminal event lands,
whichever process tries first) and refreshes expiry. Reads are a script too, so epoch, last seq,
closed flag, earliest retained seq and the entries are one consistent snapshot. The appends made in
one turn of the event loop (every running generation's next token) travel in one script call (one
per slot under a cluster, in one pipeline), one call in flight at a time.

Retention. Count: the read script treats ``last_seq - max_events`` and older as gone, however much
approximate trimming left behind. Age: every entry carries the Redis clock time ``t``; append and
read ``XTRIM MINID`` away entries older than ``max_age`` from the head (bounded work, amortised),
and all of a stream's keys ``PEXPIRE`` after ``max_age`` (plus 1/64) and are refreshed by the
appends (by the first one after 1/64 of ``max_age``: time ``rx``, not three ``PEXPIRE``s a token), so
an idle stream (finished or abandoned) vanishes on its own. Redis restarting without persistence
looks the same as expiry: the stream is unknown (``StreamNotFound``), and once created again it has
a new epoch, so old cursors get ``reset=epoch_changed``, never a silent gap. A failover to a replica
that lacks the last acknowledged writes is noticed by the producing process (its next sequence
number is not past the last it was given) and moves the stream to a new epoch the same way.

Live reads. Viewers do not each run ``XREAD BLOCK``. Each process keeps a
:class:`~ssegate.log.tail.Tail` per stream it has viewers of, fed from two sources, each entry
decoded and encoded once: its own appends, as their replies land (a generation's producer and its
viewers in one process: the tokens go to the viewers from memory, Redis only stores them), and
one background task that blocks on every other followed stream (plus this instance's wake
stream, which a read ``XADD``s to when it adds a stream to the set). Local waiters serve
themselves from the tail; the live fan-out listens to it (:meth:`RedisEventLog.listen`,
:meth:`RedisEventLog.read_now`). The append script records which process appended last and tells
the one before (a note on its wake stream) when another appends, so a process that feeds a stream
from its own appends and leaves it out of its ``XREAD`` still hears of a cancel from elsewhere; a
reply that skips a sequence number puts the stream back into the ``XREAD``, which fills the gap.
The ids are Redis's either way: viewers resume exactly on any process. A waiter that times out
checks Redis directly, which also catches a stream recreated behind the tail's back.
Under a Redis Cluster, which refuses a command naming keys of two slots, that reader is split by
slot: one blocking ``XREAD`` per slot that has local waiters (each on its own connection, with a
wake stream in that slot), so a process holds as many blocking connections as slots it follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, cast

from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ssegate.codec.encoder import encode_fields
from ssegate.errors import LogError, StreamClosed, StreamExists, StreamNotFound
from ssegate.log.base import (
    Landed,
    LogEntry,
    ReadResult,
    Retention,
    entry_after_encoding,
    make_entry,
    parse_id,
)
from ssegate.log.cursor import new_epoch, resolve_cursor
from ssegate.log.memory import DEFAULT_READ_BATCH
from ssegate.log.redis_connect import Clients, connect
from ssegate.log.slots import SCRIPTS as SLOT_SCRIPTS
from ssegate.log.slots import RedisSlots
from ssegate.log.tail import Tail

__all__ = ["RedisEventLog"]

logger = logging.getLogger(__name__)

# Shared by the scripts: Redis's clock (one clock for every process), and age trimming of the head.
_LUA_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function trim_age(log, cutoff)
  local head = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  if #head == 0 or tonumber(head[1][2][2]) >= cutoff then return end
  while true do
    local batch = redis.call('XRANGE', log, '-', '+', 'COUNT', 128)
    if #batch == 0 then return end
    for _, item in ipairs(batch) do
      if tonumber(item[2][2]) >= cutoff then
        redis.call('XTRIM', log, 'MINID', item[1])
        return
      end
    end
    local last = tonumber(string.sub(batch[#batch][1], 3))
    redis.call('XTRIM', log, 'MINID', '0-' .. (last + 1))
  end
end
"""

# KEYS: log, state, meta. ARGV: epoch, max_events, max_age_ms.
_CREATE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('HSET', KEYS[2], 'epoch', ARGV[1], 'seq', 0, 'closed', 0,
           'max_events', ARGV[2], 'max_age_ms', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

# The appends of one loop turn in one call (one slot's, under a cluster): per append KEYS log,
# state, meta and ARGV event, data, terminal ('1' or '0'), n, after ARGV[1], the appending process.
# One call rather than one per append: Redis spent more on entering the script than on the
# commands in it (about 26 of 40 µs a call, commandstats). Each reply names the process that
# appended to its stream before, if another: it may be feeding its viewers from its own appends
# (see RedisEventLog._landed) and must hear of this one. The head is trimmed by age every 64th
# append of a stream (and on reads): bounded work, not an XRANGE per token.
#
# Idempotent: (process, n) names an append (n counts up per process), and the state keeps each
# process's last "n seq" (field w:<process>), written with the entry in one atomic step (so a
# replica has both or neither). A call run again after a lost reply (redis-py's cluster client
# re-sends a pipeline after a connection error) finds its own n and returns the entry it made
# instead of adding it twice. An n older than the last (two appends of one call to one stream)
# is looked for among the stream's newest entries, which carry their name (field n).
_APPEND = (
    _LUA_PRELUDE
    + """
local writer = string.sub(ARGV[1], 1, 12)
local wf = 'w:' .. writer
-- The entry this process's append number n made, if it is in the stream already.
local function landed(log, record, n)
  if not record then return nil end
  local space = string.find(record, ' ', 1, true)
  local last_n = tonumber(string.sub(record, 1, space - 1))
  if n == last_n then return tonumber(string.sub(record, space + 1)) end
  if n > last_n then return nil end
  local token = writer .. ':' .. n
  for _, item in ipairs(redis.call('XREVRANGE', log, '+', '-', 'COUNT', 64)) do
    local fields = item[2]
    for k = 1, #fields, 2 do
      if fields[k] == 'n' and fields[k + 1] == token then return tonumber(string.sub(item[1], 3)) end
    end
  end
  return nil
end
local replies = {}
local now = now_ms()  -- once per call: its appends land in one instant
for i = 0, #KEYS / 3 - 1 do
  local log, state = KEYS[3 * i + 1], KEYS[3 * i + 2]
  local event, data, terminal, n = ARGV[4 * i + 2], ARGV[4 * i + 3], ARGV[4 * i + 4], ARGV[4 * i + 5]
  local st = redis.call('HMGET', state, 'epoch', 'seq', 'closed', 'max_events', 'max_age_ms', 'by', wf, 'rx')
  local again = st[1] and landed(log, st[7], tonumber(n))
  if not st[1] then
    replies[i + 1] = {'missing'}
  elseif again then
    replies[i + 1] = {'ok', st[1], again, ''}
  elseif st[3] == '1' then
    replies[i + 1] = {'closed'}
  else
    local seq = tonumber(st[2]) + 1
    local id = '0-' .. seq
    local changed = {'seq', seq, 'by', ARGV[1]}  -- the state's fields, in one HSET
    if terminal == '1' then
      redis.call('XADD', log, 'MAXLEN', '~', st[4], id,
                 't', now, 'ev', event, 'd', data, 'ep', st[1], 'n', writer .. ':' .. n, 'x', '1')
      changed[#changed + 1] = 'closed'
      changed[#changed + 1] = 1
    else
      redis.call('XADD', log, 'MAXLEN', '~', st[4], id,
                 't', now, 'ev', event, 'd', data, 'ep', st[1], 'n', writer .. ':' .. n)
    end
    -- An older n landing late (two calls in flight) must not hide the newer one's record.
    local last_n = st[7] and tonumber(string.sub(st[7], 1, string.find(st[7], ' ', 1, true) - 1))
    if not last_n or tonumber(n) > last_n then
      changed[#changed + 1] = wf
      changed[#changed + 1] = n .. ' ' .. seq
    end
    local age = tonumber(st[5])
    if seq % 64 == 1 or terminal == '1' then trim_age(log, now - age) end
    -- Expiry: refreshed once the last refresh (rx) is age/64 old, for age + age/64: the keys
    -- outlive the last append by max_age (and at most 1/64 more), not three PEXPIREs a token.
    local slack = math.floor(age / 64)
    if not st[8] or now - tonumber(st[8]) >= slack then
      changed[#changed + 1] = 'rx'
      changed[#changed + 1] = now
      for k = 3 * i + 1, 3 * i + 3 do redis.call('PEXPIRE', KEYS[k], age + slack) end
    end
    redis.call('HSET', state, unpack(changed))
    local before = ''
    if st[6] and st[6] ~= ARGV[1] then before = st[6] end
    replies[i + 1] = {'ok', st[1], seq, before}
  end
end
return replies
"""
)

# KEYS: log, state, meta. ARGV: event, data, meta field, key. An append and its idempotency record
# in one step (see EventLog.append_once): a retry after a lost reply finds the record.
_APPEND_ONCE = (
    _LUA_PRELUDE
    + """
local st = redis.call('HMGET', KEYS[2], 'epoch', 'seq', 'closed', 'max_events', 'max_age_ms')
if not st[1] then return {'missing'} end
local known = redis.call('HGET', KEYS[3], ARGV[3])
if known then
  local space = string.find(known, ' ', 1, true)
  if space and string.sub(known, space + 1) == ARGV[4] then
    return {'duplicate', string.sub(known, 1, space - 1)}
  end
end
if st[3] == '1' then return {'closed'} end
local seq = tonumber(st[2]) + 1
local now = now_ms()
redis.call('XADD', KEYS[1], 'MAXLEN', '~', st[4], '0-' .. seq,
           't', now, 'ev', ARGV[1], 'd', ARGV[2], 'ep', st[1])
redis.call('HSET', KEYS[2], 'seq', seq)
local id = st[1] .. ':' .. seq
redis.call('HSET', KEYS[3], ARGV[3], id .. ' ' .. ARGV[4])
trim_age(KEYS[1], now - tonumber(st[5]))
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, st[5]) end
return {'ok', id}
"""
)

# KEYS: log, state. ARGV: cursor epoch ('' = start from the earliest), first wanted seq, batch.
_READ = (
    _LUA_PRELUDE
    + """
local st = redis.call('HMGET', KEYS[2], 'epoch', 'seq', 'closed', 'max_events', 'max_age_ms')
if not st[1] then return {'missing'} end
local last = tonumber(st[2])
trim_age(KEYS[1], now_ms() - tonumber(st[5]))
local first = last + 1
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #head > 0 then first = tonumber(string.sub(head[1][1], 3)) end
local by_count = last - tonumber(st[4]) + 1
if by_count > first then first = by_count end
local start = first
local hint = tonumber(ARGV[2])
if ARGV[1] == st[1] and hint >= first and hint <= last + 1 then start = hint end
local entries = {}
if start <= last then
  entries = redis.call('XRANGE', KEYS[1], '0-' .. start, '+', 'COUNT', ARGV[3])
end
return {'ok', st[1], last, tonumber(st[3]), first, entries}
"""
)

# KEYS: log, state, meta. ARGV: new epoch. After a failover lost acknowledged writes: the stream
# goes on under a new epoch, its entries gone (they mixed two histories), its numbers kept.
_REWIND = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'epoch', ARGV[1], 'closed', 0)
redis.call('HDEL', KEYS[2], 'rx')  -- the next append sets the new log key's expiry
return 1
"""

# KEYS: state, meta. ARGV: field, value, ... The metadata lives and dies with the stream.
_SET_META = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return 0 end
if #ARGV > 0 then
  redis.call('HSET', KEYS[2], unpack(ARGV))
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return 1
"""

# KEYS: log, state, meta. ARGV: milliseconds.
_EXPIRE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local ms = tonumber(ARGV[1])
if ms > 0 then redis.call('HDEL', KEYS[2], 'rx') end  -- a later append restores the default
for _, key in ipairs(KEYS) do
  if ms > 0 then redis.call('PEXPIRE', key, ms) else redis.call('DEL', key) end
end
return 1
"""

# KEYS: members. ARGV: member, ttl_ms. The key outlives its longest-lived member, no more.
_HEARTBEAT = (
    _LUA_PRELUDE
    + """
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now_ms() + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""
)

# KEYS: members.
_LIVE_MEMBERS = (
    _LUA_PRELUDE
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms())
return redis.call('ZCARD', KEYS[1])
"""
)


# KEYS: one limit's window (a ZSET of hits scored by Redis time). ARGV: limit, window ms, a unique
# member. Redis's clock, so every process counts the same window; 0 = admitted, else ms to wait.
_ADMIT = (
    _LUA_PRELUDE
    + """
local now = now_ms()
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""
)


def _milliseconds(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _entry(redis_id: str, fields: dict[str, str]) -> LogEntry:
    seq = int(redis_id.partition("-")[2])
    return make_entry(fields["ep"], seq, fields["ev"], fields["d"], terminal="x" in fields)


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


# A repeated create could report StreamExists for its own success (appends: see _AppendBatcher); a
# slot taken or given back twice would count twice.
_NOT_REPEATABLE = frozenset({"create", "admit", "rewind", "slots_take", "slots_give_back"})
# Writes that events depend on go to the primary Sentinel names now (see Clients.confirm_primary);
# reads, presence and limits may meet the old primary until it is demoted: nothing of theirs lasts.
_CONFIRMED_WRITES = frozenset({"create", "append_once", "rewind"})


async def _once_more_on_dropped_connection(call: Callable[[], Awaitable[Any]]) -> Any:
    """Run an idempotent command, once more if its pooled connection turned out to be dead.

    A connection Redis closed (a restart, an idle time-out) is noticed only when used; the second
    attempt gets a fresh connection, and fails for real if Redis is really gone.
    """
    try:
        return await call()
    except RedisConnectionError:
        return await call()


def _failed(what: str, cause: object) -> LogError:
    return LogError(f"event log (Redis) failed to {what}: {cause}")


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn any Redis failure into LogError, naming the operation that failed."""
    try:
        yield
    except RedisError as exc:
        raise _failed(what, exc) from exc


class _WentBack(Exception):
    """An append's sequence number is not past this process's last one: writes were lost."""


# An append waiting for the next call: its stream, keys, arguments, and where its reply goes (the
# future of a caller awaiting it, or the callback of a queued append, see append_soon).
# The event's own lines (encode_fields without an id) go along: its entry is made from them on landing.
_QueuedAppend = tuple[str, list[str], list[str], "asyncio.Future[Any] | Landed", bytes]
# What the log makes of a landed append's reply (the caller's result), called in pipeline order.
_Landed = Callable[[str, list[str], bytes, Any], Any]


# Under load (at least _BUSY appends queued while a call was out), one append call at most this
# often (s): each costs the process a socket write (a syscall that on loopback also runs Redis's
# side of TCP) and Redis a script call, whatever its size. W4 over Redis (1 worker, N=100, a
# loaded machine, runs side by side): ~650 calls/s of ~8 appends and ≈ 170 µs of CPU (gateway +
# Redis) per token without it, ~350 calls/s and ≈ 147 µs with it. A publish now and then (W2:
# one or two queued per call) and an idle stream's tokens go at once, as before.
_SEND_INTERVAL = 0.002
_BUSY = 4


def _resolve(caller: asyncio.Future[Any], outcome: Any) -> None:
    """Hand ``outcome`` (a reply, or the exception it is) to a waiting caller, unless it gave up."""
    if caller.done():
        return  # its caller was cancelled
    if isinstance(outcome, BaseException):
        caller.set_exception(outcome)
    else:
        caller.set_result(outcome)


def _pack(words: list[str]) -> bytes:
    """A command in RESP, made here: every argument is a str, and redis-py's packer (an encoder
    call per argument) was 5 % of the process under W4."""
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class _AppendBatcher:
    """Sends the appends made in one turn of the event loop to Redis in one script call (one per
    slot under a cluster, in one pipeline).

    Every running generation appends a token at a time; one command each costs redis-py about
    200 µs of CPU here, a command in a pipeline about 50. So the first append of a turn starts a
    sending task, the others of that turn join it, and each caller gets its own script reply. On
    one Redis the call goes straight onto a connection kept for appends (no pipeline); under a
    cluster, a pipeline of one call per slot. Nothing is retried (an append that might have
    landed must not land twice), except a script that Redis no longer knows (NOSCRIPT: it ran
    nothing), which is loaded and sent again. Order is kept: Redis runs a call's appends, and a
    pipeline's calls, in the order queued, and ``landed`` sees the replies in that order, before
    any caller resumes (the local feed of RedisEventLog relies on it).

    One call in flight at a time: appends made while one is out wait for its reply and go
    together in the next. Two calls on two pooled connections could land in either order, and
    a reply with a lower number landing after a higher one reads as writes Redis lost (a
    failover: the stream was moved to a new epoch, every viewer reset) and as a gap in the local
    feed. Under load the batches grow instead (fewer, larger calls), and once many appends queue
    during each call, the calls are paced (``_SEND_INTERVAL``) so that they grow further.

    On one Redis the log's other short commands (its scripts, HGETALL, EXISTS, ZREM: see
    :meth:`command`) ride along in the same write, after the appends, each with its own reply:
    a generation's start and a process's heartbeats cost a packed command each instead of a
    redis-py call (about a third of the process's CPU while W4 ramps up). A call that carries
    commands is not paced: somebody waits for each.
    """

    def __init__(
        self, connect: Callable[[], Awaitable[Clients]], script: str, landed: _Landed, instance: str
    ) -> None:
        self._connect = connect
        self._instance = instance  # the appending process, as the script records it
        self._landed = landed
        self._source = script
        self._sha = hashlib.sha1(script.encode()).hexdigest()  # what EVALSHA names it by
        self._queued: list[_QueuedAppend] = []
        self._commands: list[tuple[bytes, asyncio.Future[Any]]] = []  # (packed, its caller)
        self._sending: asyncio.Task[None] | None = None  # the one call in flight
        self._connection: tuple[Any, Any] | None = None  # on one Redis: (connection, its pool)

    async def append(self, stream: str, keys: list[str], args: list[str], body: bytes) -> Any:
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue(stream, keys, args, reply, body)
        return await reply

    def queue(
        self, stream: str, keys: list[str], args: list[str], reply: asyncio.Future[Any] | Landed, body: bytes
    ) -> None:
        """Queue an append for the next call; its reply goes to ``reply`` (see :meth:`_settle`)."""
        self._queued.append((stream, keys, args, reply, body))
        self._start_sending()

    async def command(self, words: list[str]) -> Any:
        """Run one short command in the next call (one Redis only: :meth:`RedisEventLog._command`);
        its raw reply (RESP2, decoded), or what it raised (a ResponseError is the command's own)."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._commands.append((_pack(words), reply))
        self._start_sending()
        return await reply

    def _start_sending(self) -> None:
        if self._sending is None:
            # Its first step runs after this turn's other appends have queued: one call for all.
            # Also the reference until done: the loop keeps only a weak one.
            self._sending = asyncio.get_running_loop().create_task(self._send_all())

    async def _send_all(self) -> None:
        """Send what is queued, a call at a time, until nothing is: the appends queued while a call
        is out go in the next one as soon as its replies are handed out, without a loop turn (and
        a task) between the two."""
        loop = asyncio.get_running_loop()
        try:
            while self._queued or self._commands:
                batch, self._queued = self._queued, []
                commands, self._commands = self._commands, []
                sent = loop.time()
                await self._send(batch, commands)
                # Many appends queued during one call (generations' tokens, not a publish now and
                # then): a call at most every _SEND_INTERVAL, fewer and larger.
                pause = sent + _SEND_INTERVAL - loop.time()
                if len(self._queued) >= _BUSY and not self._commands and pause > 0:
                    await asyncio.sleep(pause)
        finally:
            self._sending = None
            if self._queued or self._commands:  # cancelled (the loop is ending): nobody may wait for ever
                batch, self._queued = self._queued, []
                commands, self._commands = self._commands, []
                closed = LogError("the event log is closed")
                self._settle(batch, [closed] * len(batch))
                self._answer(commands, [closed] * len(commands))

    async def _send(
        self, batch: list[_QueuedAppend], commands: list[tuple[bytes, asyncio.Future[Any]]]
    ) -> None:
        try:
            replies, answers = await self._replies(batch, commands)
        except asyncio.CancelledError:  # the log is closing: no caller may wait for ever
            closed = LogError("the event log is closed")
            self._settle(batch, [closed] * len(batch))
            self._answer(commands, [closed] * len(commands))
            raise
        except Exception as exc:  # every caller of the call hears of it
            answers = [exc] * len(commands)  # as raised: RedisEventLog._command tells them apart
            if isinstance(exc, RedisError):
                exc = _failed("append", exc)
            elif not isinstance(exc, LogError):
                exc = _failed("append", repr(exc))
            replies = [exc] * len(batch)
        self._settle(batch, replies)
        self._answer(commands, answers)

    async def _replies(
        self, batch: list[_QueuedAppend], commands: list[tuple[bytes, asyncio.Future[Any]]]
    ) -> tuple[list[Any], list[Any]]:
        replies, answers = await self._run(batch, commands)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:  # Redis lost its scripts (a restart): those commands ran nothing
            redis = (await self._connect()).redis
            await cast(Awaitable[str], redis.script_load(self._source))
            again, _ = await self._run([batch[i] for i in missing], [])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies, answers

    @staticmethod
    def _answer(commands: list[tuple[bytes, asyncio.Future[Any]]], answers: list[Any]) -> None:
        for (_packed, caller), answer in zip(commands, answers, strict=True):
            _resolve(caller, answer)

    def _settle(self, batch: list[_QueuedAppend], replies: list[Any]) -> None:
        failed: dict[str, LogError] = {}  # queued appends' streams that failed: hold the rest back
        for (stream, _keys, args, caller, body), reply in zip(batch, replies, strict=True):
            if isinstance(reply, RedisError):
                reply = _failed("append", reply)
            elif not isinstance(reply, Exception):
                try:  # even for a cancelled caller: the entry is in the log, viewers here want it
                    reply = self._landed(stream, args, body, reply)
                except Exception as exc:
                    reply = exc
            if not isinstance(caller, asyncio.Future):
                if isinstance(reply, _WentBack):  # the queuing producer verifies what the log holds
                    reply = LogError(f"the event log lost the latest writes to {stream!r} (a failover)")
                if isinstance(reply, LogError) and not isinstance(reply, StreamClosed):
                    failed.setdefault(stream, reply)
                self._hand(caller, reply)
            else:
                _resolve(caller, reply)
        if failed:
            self._hold_back(failed)

    def _hold_back(self, failed: dict[str, LogError]) -> None:
        """The queued appends of streams whose append just failed are not sent (one landing after
        the failed one would be a gap): each fails with its stream's error, in order."""
        held = [
            item for item in self._queued if item[0] in failed and not isinstance(item[3], asyncio.Future)
        ]
        if not held:
            return
        self._queued = [
            item for item in self._queued if item[0] not in failed or isinstance(item[3], asyncio.Future)
        ]
        for stream, _keys, _args, landed, _body in held:
            self._hand(cast(Landed, landed), failed[stream])

    @staticmethod
    def _hand(landed: Landed, reply: Any) -> None:
        try:
            landed(reply)
        except Exception:  # the producer's bug must not stop the other replies
            logger.exception("an append's reply callback failed")

    async def _run(
        self, batch: list[_QueuedAppend], commands: list[tuple[bytes, asyncio.Future[Any]]]
    ) -> tuple[list[Any], list[Any]]:
        """One script call per slot (one in all on a single Redis), in one pipeline under a
        cluster; each append's reply, or the error of its call, in the order queued; and each
        command's reply (one Redis only)."""
        clients = await self._connect()
        await clients.confirm_primary()  # Sentinel: never acknowledge appends a demoted primary took
        if not clients.cluster:
            return await self._run_one(clients, batch, commands)
        assert not commands, "commands ride along on one Redis only"
        groups: dict[int, list[int]] = {}
        for i, (_stream, keys, _args, _reply, _body) in enumerate(batch):
            groups.setdefault(key_slot(keys[0].encode()), []).append(i)
        async with clients.redis.pipeline(transaction=False) as pipe:
            for members in groups.values():
                keys = [key for i in members for key in batch[i][1]]
                args = [self._instance, *(arg for i in members for arg in batch[i][2])]
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            calls = list(await pipe.execute(raise_on_error=False))
        replies: list[Any] = [None] * len(batch)
        for members, call in zip(groups.values(), calls, strict=True):
            for n, i in enumerate(members):
                replies[i] = call if isinstance(call, Exception) else call[n]
        return replies, []

    async def _run_one(
        self, clients: Clients, batch: list[_QueuedAppend], commands: list[tuple[bytes, asyncio.Future[Any]]]
    ) -> tuple[list[Any], list[Any]]:
        """:meth:`_run` on one Redis (or Sentinel's primary): the batch is one script call, on a
        connection kept for the appends, packed and read with redis-py's connection calls. Its
        pipeline around one command (command stack, pool checkout, bookkeeping) cost more of the
        process's CPU than the call itself (py-spy, bench W4)."""
        if self._connection is None:
            pool = clients.redis.connection_pool
            self._connection = (await pool.get_connection(), pool)
        else:
            if self._connection[0].should_reconnect():  # Sentinel names another primary now
                self._connection[0].reset_should_reconnect()
                await self._connection[0].disconnect()
            # What the pool checks when it lends a connection: one that Redis closed while it
            # was idle (a restart) is made again before the call, not found dead by it.
            await self._connection[1].ensure_connection(self._connection[0])
        connection = self._connection[0]
        packed = self._packed(batch) if batch else b""
        # On any failure but a command's own error (cancellation included) redis-py drops the
        # connection, and the next call connects afresh: a half-read reply is never taken for another's.
        await self._send_packed(connection, packed + b"".join(command for command, _ in commands))
        replies: list[Any] = []
        if batch:
            try:
                replies = list(await connection.read_response())
            except ResponseError as exc:  # the script's own error (NOSCRIPT too): the connection is fine
                replies = [exc] * len(batch)
        answers: list[Any] = []
        for _ in commands:
            try:
                answers.append(await connection.read_response())
            except ResponseError as exc:
                answers.append(exc)
        return replies, answers

    def _packed(self, batch: list[_QueuedAppend]) -> bytes:
        """The batch's one EVALSHA, for all its appends."""
        keys = [key for item in batch for key in item[1]]
        words = ["EVALSHA", self._sha, str(len(keys)), *keys, self._instance]
        words += [arg for item in batch for arg in item[2]]
        return _pack(words)

    @staticmethod
    async def _send_packed(connection: Any, packed: bytes) -> None:
        """``send_packed_command`` under our own time-out: redis-py's is ``asyncio.wait_for``,
        which on Python 3.11 wraps the write in a task of its own and resumes the caller two loop
        turns later, on every call."""
        limit, connection.socket_timeout = connection.socket_timeout, None
        try:
            async with asyncio.timeout(limit):
                await connection.send_packed_command(packed, check_health=False)
        except TimeoutError as exc:  # cancelled mid-write: redis-py dropped the connection
            raise RedisTimeoutError("Timeout writing to socket") from exc
        finally:
            connection.socket_timeout = limit

    async def aclose(self) -> None:
        """Send what is queued and wait for every send, before the connections close."""
        while self._sending is not None or self._queued or self._commands:
            if self._sending is None:
                self._sending = asyncio.get_running_loop().create_task(self._send_all())
            await asyncio.gather(self._sending, return_exceptions=True)
        kept, self._connection = self._connection, None
        if kept is not None:
            with contextlib.suppress(RedisError, OSError):
                await kept[1].release(kept[0])


class _Snapshot:
    """One consistent look at a stream, as the read script returns it."""

    __slots__ = ("epoch", "last_seq", "result")

    def __init__(self, epoch: str, last_seq: int, result: ReadResult) -> None:
        self.epoch = epoch
        self.last_seq = last_seq
        self.result = result


class _Shard:
    """Followed streams that one blocking XREAD may name: all of them on a single Redis, one slot's
    under a cluster (which refuses a command naming keys of two slots)."""

    __slots__ = ("following", "nudging", "slot", "streams", "task", "version", "wake_key", "wanted")

    def __init__(self, slot: int, wake_key: str) -> None:
        self.slot = slot
        self.wake_key = wake_key  # this process's wake stream for this shard (see _nudge_follower)
        self.streams: set[str] = set()  # the streams of this shard that have (or had) a tail
        self.version = 0  # bumped when a stream joins the shard
        self.following = -1  # the version of the XREAD in flight (-1: none)
        self.wanted = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.nudging: asyncio.Task[None] | None = None  # a nudge from a callback (see _refollow)


_SCRIPTS = [
    ("create", _CREATE),
    ("append_once", _APPEND_ONCE),
    ("read", _READ),
    ("set_meta", _SET_META),
    ("expire", _EXPIRE),
    ("heartbeat", _HEARTBEAT),
    ("live_members", _LIVE_MEMBERS),
    ("admit", _ADMIT),
    ("rewind", _REWIND),
    *SLOT_SCRIPTS.items(),
]


_SHAS = {name: hashlib.sha1(body.encode()).hexdigest() for name, body in _SCRIPTS}


class RedisEventLog:
    """:class:`~ssegate.log.base.EventLog` on Redis Streams, shared by every process using ``url``."""

    def __init__(
        self,
        url: str,
        *,
        read_batch: int = DEFAULT_READ_BATCH,
        block: float = 5.0,
        tail_capacity: int = 1024,
        tail_linger: float = 30.0,
        timeout: float = 10.0,
        max_connections: int = 32,
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._block = block
        self._max_connections = max_connections
        # Which clients (one Redis, a cluster, Sentinel) is found out on first use: see _connected.
        self._clients: Clients | None = None
        self._connecting = asyncio.Lock()
        self._scripts: dict[str, AsyncScript] = {}
        self._instance = uuid.uuid4().hex  # this process, as the append script records who appended
        self._append_count = 0  # numbers this process's appends (with _instance: idempotent)
        self._appends = _AppendBatcher(self._connected, _APPEND, self._landed, self._instance)
        self._read_batch = read_batch
        self._block_ms = _milliseconds(block)
        self._tail_capacity = tail_capacity
        self._tail_linger = tail_linger
        self._keys_of: dict[str, list[str]] = {}  # see _prepared
        self._appended: dict[str, tuple[str, int]] = {}  # stream -> (epoch, seq) of our last append
        self._tails: dict[str, Tail] = {}
        self._shards: dict[int, _Shard] = {}  # slot (0 on a single Redis) -> its follower
        self._background: set[asyncio.Task[None]] = set()  # nudges and notes under way
        self._closed = False

    async def __aenter__(self) -> RedisEventLog:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- keys --------------------------------------------------------------------------------

    @staticmethod
    def _keys(stream: str, *parts: str) -> list[str]:
        return [f"ssegate:{{{stream}}}:{part}" for part in parts]

    async def _connected(self) -> Clients:
        """The clients, made on first use (probing the URL for cluster mode once)."""
        clients = self._clients
        if clients is not None:
            return clients
        async with self._connecting:
            if self._clients is None:
                self._check_open()
                with _translated("connect"):
                    clients = await connect(
                        self._url,
                        io_timeout=self._timeout,
                        block=self._block,
                        max_connections=self._max_connections,
                    )
                if self._closed:  # closed while it connected: nobody else will close these
                    await self._closed_meanwhile(clients)
                    self._check_open()
                self._scripts = {name: clients.redis.register_script(body) for name, body in _SCRIPTS}
                self._clients = clients
            return self._clients

    @contextlib.asynccontextmanager
    async def _using(self) -> AsyncIterator[Any]:
        """The command client, for one operation (see :meth:`_closed_meanwhile`)."""
        clients = await self._connected()
        try:
            yield clients.redis
        finally:
            if self._closed:
                await self._closed_meanwhile(clients)

    async def _closed_meanwhile(self, clients: Clients) -> None:
        """An operation that was under way when the log closed may have taken a connection after
        the pools were emptied (redis-py makes a new one on demand): close them again as it ends,
        or that connection stays open until the garbage collector warns of it somewhere else."""
        with contextlib.suppress(Exception):
            await asyncio.shield(clients.aclose())

    async def _script(self, name: str, keys: list[str], args: list[str | int | float]) -> Any:
        self._check_open()
        clients = await self._connected()
        if name in _CONFIRMED_WRITES:
            await clients.confirm_primary()
        if not clients.cluster:
            words = ["EVALSHA", _SHAS[name], str(len(keys)), *keys, *map(str, args)]
            return await self._command(name.replace("_", " "), words, repeatable=name not in _NOT_REPEATABLE)
        call = self._scripts[name]
        try:
            with _translated(name.replace("_", " ")):
                if name in _NOT_REPEATABLE:
                    return await call(keys=keys, args=args)
                return await _once_more_on_dropped_connection(lambda: call(keys=keys, args=args))
        finally:
            if self._closed:
                await self._closed_meanwhile(clients)

    async def _command(self, what: str, words: list[str], *, repeatable: bool = True) -> Any:
        """A short command on one Redis, sent with the next append call (see
        :meth:`_AppendBatcher.command`): once more if the connection turned out dead and the
        command may run twice, its script loaded if Redis lost it (a restart)."""
        retried = loaded = False
        with _translated(what):
            while True:
                try:
                    return await self._appends.command(words)
                except NoScriptError:  # it ran nothing: load every script, then once more
                    if loaded:
                        raise
                    loaded = True
                    redis = (await self._connected()).redis
                    for _name, body in _SCRIPTS:
                        await cast(Awaitable[str], redis.script_load(body))
                except RedisConnectionError:
                    if retried or not repeatable:
                        raise
                    retried = True

    def _check_open(self) -> None:
        if self._closed:
            raise LogError("the event log is closed")

    # -- limits shared by every process ------------------------------------------------------

    async def admit(self, key: str, limit: int, window: float) -> float:
        """:class:`~ssegate.log.base.WindowCounter` on Redis: N processes enforce ``limit``, not N
        times it. The key is hashed into its own hash tag (one slot under Redis Cluster)."""
        tag = hashlib.sha1(key.encode()).hexdigest()[:20]
        args: list[str | int | float] = [limit, _milliseconds(window), uuid.uuid4().hex]
        wait_ms = await self._script("admit", [f"ssegate:{{limit:{tag}}}:hits"], args)
        return int(wait_ms) / 1000

    def slots(self) -> RedisSlots:
        """Concurrent-stream slots counted in this Redis for every process (ssegate.log.slots)."""
        return RedisSlots(self._script)

    # -- streams -----------------------------------------------------------------------------

    async def create(self, stream: str, retention: Retention) -> None:
        keys = self._keys(stream, "log", "state", "meta")
        args: list[str | int | float] = [new_epoch(), retention.max_events, _milliseconds(retention.max_age)]
        if not await self._script("create", keys, args):
            raise StreamExists(f"stream {stream!r} already exists")

    async def exists(self, stream: str) -> bool:
        self._check_open()
        key = self._keys(stream, "state")[0]
        if not (await self._connected()).cluster:
            return bool(await self._command("check a stream", ["EXISTS", key]))
        with _translated("check a stream"):
            async with self._using() as redis:
                return bool(await _once_more_on_dropped_connection(lambda: redis.exists(key)))

    async def append(self, stream: str, event: str, data: str, *, terminal: bool = False) -> LogEntry:
        keys, args, body = self._prepared(stream, event, data, terminal)
        try:
            return cast(LogEntry, await self._appends.append(stream, keys, args, body))
        except _WentBack:
            # A failover lost writes this process was told had landed (Redis replicates
            # asynchronously), and this append reused one of their numbers: a viewer who saw the
            # lost entry would go on after it unaware. A new epoch makes every old cursor reset.
            await self._script("rewind", keys, [new_epoch()])
            return await self.append(stream, event, data, terminal=terminal)

    def append_soon(self, stream: str, event: str, data: str, *, terminal: bool, landed: Landed) -> None:
        """:meth:`append` without waiting: it goes in the next call, its outcome to ``landed``
        (see :class:`~ssegate.log.base.QueueingLog`). A producer keeps several in flight."""
        keys, args, body = self._prepared(stream, event, data, terminal)
        self._appends.queue(stream, keys, args, landed, body)

    def _prepared(
        self, stream: str, event: str, data: str, terminal: bool
    ) -> tuple[list[str], list[str], bytes]:
        """An append's keys (log, state, meta: made once per stream, not per token), its script
        arguments and its SSE lines. Encoded first: an event SSE cannot carry fails here, before it
        takes a sequence number."""
        body = encode_fields(None, event, data)
        self._check_open()
        keys = self._keys_of.get(stream)
        if keys is None:
            if len(self._keys_of) >= 10_000:
                self._keys_of.clear()
            keys = self._keys_of[stream] = self._keys(stream, "log", "state", "meta")
        # The append's number in this process: a call sent again is recognised (see _APPEND).
        self._append_count += 1
        return keys, [event, data, "1" if terminal else "0", str(self._append_count)], body

    def _landed(self, stream: str, args: list[str], body: bytes, reply: Any) -> LogEntry:
        """An append's reply, as it lands (in pipeline order): the entry, handed straight to this
        process's tail of the stream if it has one. Its viewers get it from memory, not back from
        Redis; the id is the one Redis stored, so they resume exactly anywhere."""
        if reply[0] == "missing":
            raise StreamNotFound(f"no stream {stream!r}")
        if reply[0] == "closed":
            raise StreamClosed(f"stream {stream!r} has ended")
        epoch, seq, before = reply[1], int(reply[2]), reply[3]
        if self._went_back(stream, epoch, seq, args[2] == "1"):
            raise _WentBack  # append() moves the stream to a new epoch and appends again
        entry = entry_after_encoding(epoch, seq, args[0], args[1], args[2] == "1", body)
        if before:  # another process appended last: it may be feeding viewers from its appends
            self._tell(before, stream, seq)
        tail = self._tails.get(stream)
        if tail is None or tail.error is not None:
            return entry
        if tail.epoch != epoch:  # a new life of the stream (created again): its readers read it
            del self._tails[stream]
            tail.retire()
        elif not tail.add_local(entry):
            self._refollow(stream)  # someone else appended in between: the XREAD fills the gap
        return entry

    def _went_back(self, stream: str, epoch: str, seq: int, terminal: bool) -> bool:
        """Whether ``seq`` is not past the last this process appended to ``stream`` (same epoch);
        remembers it (the last 10,000 streams, enough for every stream a process produces)."""
        last = self._appended.pop(stream, None)
        if last is not None and last[0] == epoch and seq <= last[1]:
            return True
        if not terminal:
            self._appended[stream] = (epoch, seq)
            if len(self._appended) > 10_000:
                del self._appended[next(iter(self._appended))]
        return False

    async def append_once(
        self, stream: str, event: str, data: str, *, field: str, key: str
    ) -> tuple[str, bool]:
        make_entry("check", 1, event, data)  # as append: what SSE cannot carry fails first
        keys = self._keys(stream, "log", "state", "meta")
        # Repeatable (unlike a plain append): the record makes a second run a duplicate.
        reply = await self._script("append_once", keys, [event, data, field, key])
        if reply[0] == "missing":
            raise StreamNotFound(f"no stream {stream!r}")
        if reply[0] == "closed":
            raise StreamClosed(f"stream {stream!r} has ended")
        return str(reply[1]), reply[0] == "duplicate"

    async def read(self, stream: str, after: str | None, *, wait: float = 0.0) -> ReadResult:
        self._check_open()
        tail = self._tails.get(stream)
        if tail is not None and wait > 0 and tail.error is None:
            cached = tail.serve(after, self._read_batch)
            if cached is not None:
                if cached.entries or cached.closed:
                    return cached
                if await self._wait(tail, wait):
                    served = self._serve_after_wake(stream, after)
                    if served is not None:
                        return served
                # Timed out (keep-alive time): ask Redis, which also notices a recreated stream.
                return (await self._snapshot(stream, after)).result
        snapshot = await self._snapshot(stream, after)
        result = snapshot.result
        if result.entries or result.closed or wait <= 0:
            return result
        self._check_open()  # closed while it asked: no follower may start after the close
        tail = self._follow(stream, snapshot)
        await self._nudge_follower(stream)
        if not await self._wait(tail, wait):
            return result
        served = self._serve_after_wake(stream, after)
        return served if served is not None else (await self._snapshot(stream, after)).result

    async def _snapshot(self, stream: str, after: str | None) -> _Snapshot:
        parsed = parse_id(after) if after is not None else None
        cursor_epoch, hint = (parsed[0], parsed[1] + 1) if parsed is not None else ("", 0)
        keys = self._keys(stream, "log", "state")
        reply = await self._script("read", keys, [cursor_epoch, hint, self._read_batch])
        if reply[0] == "missing":
            raise StreamNotFound(f"no stream {stream!r}")
        epoch, last_seq, closed, first_seq = reply[1], int(reply[2]), bool(reply[3]), int(reply[4])
        _start, reset = resolve_cursor(after, epoch, first_seq, last_seq)
        entries = [_entry(redis_id, _pairs(flat)) for redis_id, flat in reply[5]]
        end = entries[-1].seq if entries else _start - 1
        return _Snapshot(epoch, last_seq, ReadResult(entries, closed=closed and end == last_seq, reset=reset))

    async def expire(self, stream: str, after_seconds: float) -> None:
        ms = math.ceil(after_seconds * 1000) if after_seconds > 0 else 0
        if not await self._script("expire", self._keys(stream, "log", "state", "meta"), [ms]):
            raise StreamNotFound(f"no stream {stream!r}")

    # -- the live fan-out's feed (LiveFeed) ----------------------------------------------------

    def listen(
        self, stream: str, listener: Callable[[LogEntry | None], None], after: str | None = None
    ) -> Callable[[], None]:
        """Call ``listener`` with each entry of ``stream`` after ``after`` as this process learns of
        it (its own appends at once, others' through its XREAD), ``None`` when only a read can
        tell what happened (see :class:`~ssegate.log.base.LiveFeed`)."""
        self._check_open()
        tail = self._tails.get(stream)
        if tail is None or tail.error is not None:
            parsed = parse_id(after) if after is not None else None
            if parsed is None:
                raise LogError(f"cannot follow {stream!r} from {after!r}")
            tail = Tail(parsed[0], parsed[1], False, self._tail_capacity)
            self._tails[stream] = tail
            if self._appended.get(stream) == parsed:
                # We appended last, right there (a generation's producer and its viewer here): our
                # appends feed it, and the XREAD need not change (a re-issued XREAD naming every
                # followed stream, per start, was a tenth of the process as W4 ramped up). Another
                # process's append sends us a note, as for any tail fed by our appends.
                tail.local = True
                shard = self._shard(stream)
                shard.streams.add(stream)
                self._run_follower(shard)
            else:
                self._refollow(stream)
        return tail.listen(listener)

    def read_now(self, stream: str, after: str | None) -> ReadResult:
        """What this process's tail of ``stream`` holds after ``after``; raises
        :class:`~ssegate.errors.LogError` when it cannot say exactly (read from Redis then)."""
        self._check_open()
        tail = self._tails.get(stream)
        if tail is not None and tail.error is None:
            result = tail.serve(after, self._tail_capacity)
            if result is not None:
                return result
        raise LogError(f"{stream!r} after {after!r} is not in this process's tail")

    # -- metadata and presence ---------------------------------------------------------------

    async def set_meta(self, stream: str, fields: dict[str, str]) -> None:
        args: list[str | int | float] = [item for pair in fields.items() for item in pair]
        if not await self._script("set_meta", self._keys(stream, "state", "meta"), args):
            raise StreamNotFound(f"no stream {stream!r}")

    async def get_meta(self, stream: str) -> dict[str, str]:
        self._check_open()
        key = self._keys(stream, "meta")[0]
        if not (await self._connected()).cluster:
            return _pairs(await self._command("read metadata", ["HGETALL", key]))
        with _translated("read metadata"):
            async with self._using() as redis:
                meta = await _once_more_on_dropped_connection(lambda: redis.hgetall(key))
            return cast(dict[str, str], meta)

    async def heartbeat(self, stream: str, role: str, member: str, ttl: float) -> None:
        await self._script("heartbeat", self._keys(stream, f"members:{role}"), [member, _milliseconds(ttl)])

    async def drop_member(self, stream: str, role: str, member: str) -> None:
        self._check_open()
        key = self._keys(stream, f"members:{role}")[0]
        if not (await self._connected()).cluster:
            await self._command("drop a member", ["ZREM", key, member])
            return
        with _translated("drop a member"):
            async with self._using() as redis:
                await _once_more_on_dropped_connection(lambda: redis.zrem(key, member))

    async def live_members(self, stream: str, role: str) -> int:
        return int(await self._script("live_members", self._keys(stream, f"members:{role}"), []))

    # -- following the live end --------------------------------------------------------------

    def _shard(self, stream: str) -> _Shard:
        """The follower of ``stream``'s slot (of everything on a single Redis), made if need be."""
        cluster = self._clients is not None and self._clients.cluster
        slot = key_slot(self._keys(stream, "log")[0].encode()) if cluster else 0
        shard = self._shards.get(slot)
        if shard is None:
            shard = self._shards[slot] = _Shard(slot, self._wake_key(stream, self._instance))
        return shard

    def _wake_key(self, stream: str, instance: str) -> str:
        """The wake stream of process ``instance`` that its XREAD over ``stream`` reads."""
        if self._clients is not None and self._clients.cluster:
            # Under a cluster the wake stream borrows the stream's hash tag: one XREAD, one slot.
            return self._keys(stream, f"wake:{instance}")[0]
        return f"ssegate:wake:{instance}"

    def _refollow(self, stream: str) -> None:
        """``stream``'s tail joined the XREAD (new, or no longer fed by our appends): have its
        follower re-issue the XREAD, with a nudge sent from a task (callers are not coroutines)."""
        shard = self._shard(stream)
        shard.streams.add(stream)
        shard.version += 1
        self._run_follower(shard)
        if shard.nudging is None or shard.nudging.done():
            shard.nudging = self._in_background(self._nudge_quietly(stream, shard))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)  # a reference until done: the loop keeps only a weak one
        task.add_done_callback(self._background.discard)
        return task

    async def _nudge_quietly(self, stream: str, shard: _Shard) -> None:
        try:
            version = -1
            while version != shard.version and not self._closed:  # a change meanwhile: once more
                version = shard.version
                await self._nudge_follower(stream)
        except LogError as exc:  # the follower's own XREAD meets the same failure and reports it
            logger.debug("nudging the follower failed: %s", exc)

    def _tell(self, process: str, stream: str, seq: int) -> None:
        """Note to ``process`` (its wake stream) that we appended ``seq`` to ``stream``: it may be
        feeding its viewers of the stream from its own appends, and must read ours."""
        self._in_background(self._note(self._wake_key(stream, process), stream, seq))

    async def _note(self, key: str, stream: str, seq: int) -> None:
        try:
            with _translated("note an append"):
                async with self._using() as redis, redis.pipeline(transaction=False) as pipe:
                    # One round trip: with two workers appending to one topic, nearly every
                    # append sends a note.
                    pipe.xadd(key, {"s": stream, "q": str(seq)}, maxlen=1000)
                    pipe.pexpire(key, 60_000)
                    await pipe.execute()
        except LogError as exc:  # the other process's waiters check Redis when they time out
            logger.warning("could not tell another process of an append to %s: %s", stream, exc)

    def _follow(self, stream: str, snapshot: _Snapshot) -> Tail:
        shard = self._shard(stream)
        tail = self._tails.get(stream)
        if tail is None or tail.error is not None or tail.epoch != snapshot.epoch:
            if tail is not None:
                tail.wake()  # its waiters fall back to Redis and find the new life of the stream
            tail = Tail(snapshot.epoch, snapshot.last_seq, snapshot.result.closed, self._tail_capacity)
            self._tails[stream] = tail
            shard.streams.add(stream)
            shard.version += 1
        self._run_follower(shard)
        return tail

    def _run_follower(self, shard: _Shard) -> None:
        """Start ``shard``'s follower task if none runs, and have it (re-)issue its XREAD."""
        if shard.task is None or shard.task.done():
            name = f"ssegate-redis-follower-{shard.slot}"
            shard.task = asyncio.create_task(self._follow_loop(shard), name=name)
        shard.wanted.set()

    async def _nudge_follower(self, stream: str) -> None:
        """Make the reader re-issue its XREAD if the set of followed streams grew since it began."""
        shard = self._shard(stream)
        if shard.following in (-1, shard.version):
            return
        with _translated("wake the follower"):
            async with self._using() as redis, redis.pipeline(transaction=False) as pipe:
                pipe.xadd(shard.wake_key, {"w": "1"}, maxlen=1, approximate=False)  # one round trip
                pipe.pexpire(shard.wake_key, 60_000)
                await pipe.execute()

    async def _wait(self, tail: Tail, wait: float) -> bool:
        """Wait for the tail to change; ``False`` on time-out. Raises the follower's failure."""
        changed = tail.changed
        tail.waiters += 1
        try:
            async with asyncio.timeout(wait):
                await changed.wait()
        except TimeoutError:
            return False
        finally:
            tail.waiters -= 1
            tail.idle_since = time.monotonic()
        self._check_open()
        if tail.error is not None:
            raise tail.error
        return True

    def _serve_after_wake(self, stream: str, after: str | None) -> ReadResult | None:
        tail = self._tails.get(stream)
        return tail.serve(after, self._read_batch) if tail is not None else None

    def _followed(self, shard: _Shard) -> dict[str, Tail] | None:
        """The shard's streams its XREAD names (not closed, not fed by our appends), forgetting
        tails nobody uses that ended or lingered; ``None`` once the shard has no tail at all (while
        it has, its wake stream is read: notes of others' appends). Only this shard's streams are
        looked at: under a cluster there may be a shard per slot."""
        now = time.monotonic()
        followed: dict[str, Tail] = {}
        for name in list(shard.streams):
            tail = self._tails.get(name)
            ended = tail is not None and (tail.closed or now - tail.idle_since > self._tail_linger)
            if tail is not None and not tail.in_use and ended:
                del self._tails[name]
                tail = None
            if tail is None:
                shard.streams.discard(name)
            elif not tail.closed and not tail.local:
                followed[name] = tail
        return followed if shard.streams else None

    async def _follow_loop(self, shard: _Shard) -> None:
        """One blocking XREAD at a time over the shard's streams (never keys of two slots)."""
        wake_id = "0-0"
        failures = 0  # in a row: the back-off after a failed XREAD
        while not self._closed:
            shard.wanted.clear()
            followed = self._followed(shard)
            if followed is None:
                shard.following = -1
                if shard.slot != 0:  # a cluster slot nobody follows: its task ends (made again on demand)
                    if self._shards.get(shard.slot) is shard:
                        del self._shards[shard.slot]
                    for name in shard.streams:  # ended; a waiter still on one asks Redis instead
                        self._tails.pop(name, None)
                    return
                await shard.wanted.wait()
                continue
            by_key = {self._keys(stream, "log")[0]: tail for stream, tail in followed.items()}
            positions: dict[Any, Any] = {key: f"0-{tail.last_seq}" for key, tail in by_key.items()}
            positions[shard.wake_key] = wake_id
            shard.following = shard.version
            try:
                clients = await self._connected()
                reply = await clients.follower.xread(positions, count=self._read_batch, block=self._block_ms)
                wake_id = self._deliver(reply or [], by_key, shard.wake_key, wake_id)
                if not reply:  # a quiet block: under Sentinel, are we blocking on the old primary?
                    await clients.confirm_primary()
            # Redis unreachable: every tail of the shard fails, those fed by our own appends too
            # (their viewers would otherwise never hear of the outage; and with a tail left, this
            # loop would retry the XREAD at once, over and over, for the outage's length).
            except LogError as exc:
                self._fail_tails(exc, self._tails_of(shard))
            except RedisError as exc:
                self._fail_tails(_failed("follow streams", exc), self._tails_of(shard))
            except Exception as exc:  # a malformed entry must fail the waiters, not strand them
                self._fail_tails(LogError(f"event log (Redis) could not decode a stream: {exc!r}"), followed)
            else:
                failures = 0
                continue
            # Tails made again by new readers during an outage would have this loop retry at once,
            # thousands of connects a second: it backs off, to 1 s (aclose cancels the wait).
            failures += 1
            await asyncio.sleep(min(1.0, 0.05 * 2**failures))

    def _tails_of(self, shard: _Shard) -> dict[str, Tail]:
        return {name: tail for name in shard.streams if (tail := self._tails.get(name)) is not None}

    def _deliver(self, reply: list[Any], by_key: dict[str, Tail], wake_key: str, wake_id: str) -> str:
        """Hand XREAD's entries to their tails and wake the waiters; returns the new wake-stream id."""
        for key, items in reply:
            if key == wake_key:
                wake_id = items[-1][0]
                for _id, fields in items:
                    noted = self._tails.get(fields.get("s", ""))
                    if noted is not None:  # another process appended: read it from Redis
                        noted.local = False
                        noted.foreign_seq = max(noted.foreign_seq, int(fields["q"]))
                continue
            tail = by_key[key]
            for redis_id, fields in items:
                tail.add(_entry(redis_id, fields), fields["ep"])
            tail.wake()
        return wake_id

    def _fail_tails(self, error: LogError, streams: dict[str, Tail] | None = None) -> None:
        """Fail the given tails (every tail if none given); their waiters hear of ``error``."""
        if streams is None:
            tails, self._tails = self._tails, {}
        else:
            tails = {name: tail for name, tail in streams.items() if self._tails.get(name) is tail}
            for name in tails:
                del self._tails[name]
        for tail in tails.values():
            tail.fail(error)

    async def aclose(self) -> None:
        self._closed = True
        self._fail_tails(LogError("the event log is closed"))
        await self._appends.aclose()
        # Notes to other processes and nudges finish first (short commands): never cut mid-reply.
        await asyncio.gather(*self._background, return_exceptions=True)
        shards, self._shards = list(self._shards.values()), {}
        for shard in shards:
            if shard.task is not None:
                shard.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await shard.task
        clients, self._clients = self._clients, None
        if clients is not None:
            await clients.aclose()
