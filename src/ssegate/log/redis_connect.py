"""Which Redis a URL names, and the redis-py clients that talk to it.

Three deployments, one URL setting (``--redis`` / ``SSEGATE_REDIS_URL``):

* ``redis://host:port/db`` (also ``rediss://``, ``unix://``): one Redis, *or any node of a Redis
  Cluster*. Which of the two is found out on first use (``INFO cluster``: ``cluster_enabled:1``),
  so the same URL works whichever the operator runs. A cluster gets redis-py's cluster client,
  which follows ``MOVED``/``ASK`` and finds a promoted replica after a failover by itself.
* ``redis+cluster://host:port[,host:port]``: a cluster, said outright (no probe; several seed nodes).
* ``redis+sentinel://[:password@]host:port[,host:port]/service[/db]``: a Sentinel-managed primary;
  the sentinels are asked for the current primary of ``service`` on every new connection, so a
  Sentinel failover is followed on reconnect.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

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


def _sentinel(url: str, timeout: float, block: float, max_connections: int) -> Clients:
    rest = url[len(SENTINEL_SCHEME) :]
    netloc, _, path = rest.partition("/")
    password, hosts = _hosts(netloc, 26379)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise SettingsError(f"Sentinel URL {url!r} names no service: redis+sentinel://host:port/service[/db]")
    service, db = parts[0], int(parts[1]) if len(parts) > 1 else 0
    options = {**_base_options(timeout), "retry": Retry(NoBackoff(), 0), "db": db, "password": password}
    sentinel = Sentinel(hosts, socket_timeout=timeout, socket_connect_timeout=timeout)
    redis = sentinel.master_for(service, socket_timeout=timeout, max_connections=max_connections, **options)
    follower = sentinel.master_for(service, socket_timeout=block + timeout, **options)
    return Clients(redis, follower, cluster=False, others=list(sentinel.sentinels))


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
