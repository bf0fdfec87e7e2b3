"""Which Redis a URL names, and the redis-py clients that talk to it.

Three deployments, one URL setting (``--redis`` / ``SSEGATE_REDIS_URL``):

* ``redis://host:port/db`` (also ``rediss://``, ``unix://``): one Redis, *or any node of a Redis
  Cluster*. Which of the two is found out on first use (``INFO cluster``: ``cluster_enabled:1``),
  so the same URL works whichever the operator runs. A cluster gets redis-py's cluster client,
  which follows ``MOVED``/``ASK`` and finds a promoted replica after a failover by itself.
* ``redis+cluster://host:port[,host:port]``: a cluster, said outright (no probe; several seed nodes).
* ``redis+sentinel://[:password@]host:port[,host:port]/service[/db]``: a Sentinel-managed primary;
  the sentinels are asked for the current primary of ``service`` on every new connection, and
  again before each write (:meth:`Clients.confirm_primary`): a failover is followed at once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.utils import str_if_bytes

from ssegate.errors import SettingsError

__all__ = ["Clients", "connect", "is_redis_url"]

SENTINEL_SCHEME = "redis+sentinel://"
CLUSTER_SCHEME = "redis+cluster://"
_SCHEMES = ("redis://", "rediss://", "unix://", SENTINEL_SCHEME, CLUSTER_SCHEME)


def is_redis_url(url: str) -> bool:
    return url.startswith(_SCHEMES)


@dataclass
class Clients:
    """The command client (pooled, bounded), the follower's client (long socket time-out: it blocks
    by design) and whether they speak to a cluster (then no command may name keys of two slots)."""

    redis: Any  # aioredis.Redis or RedisCluster: the same command methods
    follower: Any
    cluster: bool
    others: list[Any] = field(default_factory=list)  # more clients of ours: Sentinel's to the sentinels
    sentinel: _SentinelPrimary | None = None

    async def confirm_primary(self) -> None:
        """Under Sentinel, make sure the next command goes to the primary the sentinels name now
        (one round trip to a sentinel); otherwise nothing."""
        if self.sentinel is not None:
            await self.sentinel.confirm()

    async def aclose(self) -> None:
        # types-redis predates aclose(); close() is deprecated (and warnings are errors).
        for client in [self.follower, self.redis, *self.others]:
            with contextlib.suppress(RedisError, OSError):  # closing: a dead server is no error
                await client.aclose()


def _base_options(timeout: float) -> dict[str, Any]:
    return {"protocol": 2, "decode_responses": True, "socket_connect_timeout": timeout}


def _hosts(netloc: str, default_port: int) -> tuple[str | None, list[tuple[str, int]]]:
    """``[:password@]h:p,h:p`` -> (password, [(h, p), ...])."""
    password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        password = unquote(auth.partition(":")[2]) or None
    hosts = []
    for part in netloc.split(","):
        host, _, port = part.strip().rpartition(":") if ":" in part else (part.strip(), "", "")
        if not host:
            raise SettingsError(f"no host in Redis URL part {part!r}")
        hosts.append((host, int(port) if port else default_port))
    return password, hosts


def _cluster(url: str, options: dict[str, Any], socket_timeout: float, max_connections: int) -> Any:
    # redis-py's own retry (backoff, topology refresh) is what carries a command over a failover.
    if url.startswith(CLUSTER_SCHEME):
        password, hosts = _hosts(urlsplit(url).netloc, 6379)
        nodes = [ClusterNode(host, port) for host, port in hosts]
        return RedisCluster(
            startup_nodes=nodes,
            password=password,
            socket_timeout=socket_timeout,
            max_connections=max_connections,
            **options,
        )
    return RedisCluster.from_url(
        url, socket_timeout=socket_timeout, max_connections=max_connections, **options
    )


class _Sentinel(Sentinel):
    """Asks for the primary the way Sentinel's client protocol says: GET-MASTER-ADDR-BY-NAME.

    redis-py reads SENTINEL MASTERS, whose record moves to the promoted replica only when the
    failover ends; GET-MASTER-ADDR-BY-NAME names it as soon as it is promoted (tens of ms before,
    in tests): writes made in between went to the old primary and were lost."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        for n, sentinel in enumerate(self.sentinels):
            try:
                address = await sentinel.sentinel_get_master_addr_by_name(service_name)  # type: ignore[no-untyped-call]
            except RedisError:
                continue
            if address:
                self.sentinels[0], self.sentinels[n] = sentinel, self.sentinels[0]  # ask it first
                return str_if_bytes(address[0]), int(address[1])
        raise MasterNotFoundError(f"no sentinel names a primary for {service_name!r}")


class _SentinelPrimary:
    """The primary the sentinels name, checked before writes and by an idle follower.

    redis-py asks the sentinels only when it opens a connection (or when the old primary refuses
    a write, READONLY). After a failover that leaves the old primary running (SENTINEL FAILOVER,
    a partition that heals), it stays a writable primary until a sentinel turns it into a replica,
    about ten seconds later in tests, and the pooled connections to it keep working: appends it
    acknowledged in between were lost when it resynced from the new primary, and a follower that
    had connected to the new one never saw them (a viewer hung in 1 of 3 CI runs)."""

    def __init__(self, sentinel: Sentinel, service: str, pools: list[Any]) -> None:
        self._sentinel = sentinel
        self._service = service
        self._pools = pools  # SentinelConnectionPool: the command client's and the follower's

    async def confirm(self) -> None:
        try:
            address = await self._sentinel.discover_master(self._service)
        except RedisError:
            return  # no sentinel answers: the primary we know is all we have (its errors tell)
        for pool in self._pools:
            if pool.master_address is not None and pool.master_address != address:
                # What redis-py does when a new connection finds the primary moved, plus the
                # connections in use: each is dropped when released, not reused.
                pool.master_address = address
                await pool.disconnect(inuse_connections=False)
                await pool.update_active_connections_for_reconnect()


def _sentinel(url: str, timeout: float, block: float, max_connections: int) -> Clients:
    rest = url[len(SENTINEL_SCHEME) :]
    netloc, _, path = rest.partition("/")
    password, hosts = _hosts(netloc, 26379)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise SettingsError(f"Sentinel URL {url!r} names no service: redis+sentinel://host:port/service[/db]")
    service, db = parts[0], int(parts[1]) if len(parts) > 1 else 0
    options = {**_base_options(timeout), "retry": Retry(NoBackoff(), 0), "db": db, "password": password}
    sentinel = _Sentinel(hosts, socket_timeout=timeout, socket_connect_timeout=timeout)
    redis = sentinel.master_for(service, socket_timeout=timeout, max_connections=max_connections, **options)
    follower = sentinel.master_for(service, socket_timeout=block + timeout, **options)
    primary = _SentinelPrimary(sentinel, service, [redis.connection_pool, follower.connection_pool])
    return Clients(redis, follower, cluster=False, others=list(sentinel.sentinels), sentinel=primary)


async def _is_cluster(url: str, timeout: float) -> bool:  # noqa: ASYNC109 (socket time-out)
    probe = aioredis.Redis.from_url(url, socket_timeout=timeout, **_base_options(timeout))
    try:
        info = await probe.info("cluster")
    finally:
        await probe.aclose()  # type: ignore[attr-defined]
    return bool(info.get("cluster_enabled"))


async def connect(url: str, *, io_timeout: float, block: float, max_connections: int) -> Clients:
    """The clients for ``url``; probes a plain ``redis://`` URL for cluster mode (one round trip).

    Raises :class:`redis.exceptions.RedisError` if Redis cannot be reached (the caller turns it into
    a LogError; the next call probes again).
    """
    if url.startswith(SENTINEL_SCHEME):
        return _sentinel(url, io_timeout, block, max_connections)
    said = url.startswith(CLUSTER_SCHEME)
    if said or (not url.startswith("unix://") and await _is_cluster(url, io_timeout)):
        options = _base_options(io_timeout)
        # Per node: the follower holds one blocking read per slot it follows (see RedisEventLog).
        redis = _cluster(url, options, io_timeout, max_connections)
        follower = _cluster(url, options, block + io_timeout, 10 * max_connections)
        return Clients(redis, follower, cluster=True)
    options = {**_base_options(io_timeout), "retry": Retry(NoBackoff(), 0)}
    # Bounded: a thousand viewers arriving at once queue for a few connections, not open a thousand.
    pool: aioredis.ConnectionPool[Any] = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=io_timeout, socket_timeout=io_timeout, **options
    )
    redis = aioredis.Redis.from_pool(pool)  # type: ignore[attr-defined]  # owns (closes) the pool
    follower = aioredis.Redis.from_url(url, socket_timeout=block + io_timeout, **options)
    return Clients(redis, follower, cluster=False)
