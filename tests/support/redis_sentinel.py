"""A real Sentinel-managed Redis on loopback: a primary, its replica and one sentinel (quorum 1).

Started from the tests on free ports, ready once the sentinel names the primary and the replica
is in sync (polled against a deadline), stopped by the PIDs we started. Import the fixture into a
``conftest.py``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.redis_process import ServerProcess, start_serving
from tests.support.servers import free_port

SERVICE = "ssegate-primary"
_START_TIMEOUT = 30.0


class SentinelServers:
    """Primary, replica and sentinel; :attr:`url` is the ``redis+sentinel://`` URL ssegate takes."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `make test`", pytrace=False)
        self._dir = tempfile.TemporaryDirectory(prefix="ssegate-sentinel-")
        self.nodes: list[ServerProcess] = []
        deadline = time.monotonic() + _START_TIMEOUT
        try:
            common = ["--bind", "127.0.0.1", "--dir", self._dir.name, "--save", "", "--appendonly", "no"]

            def primary() -> ServerProcess:
                port = free_port()
                return ServerProcess(binary, ["--port", str(port), *common], port)

            self.primary = start_serving(primary, deadline)
            self.nodes.append(self.primary)
            replica_of = ["--replicaof", "127.0.0.1", str(self.primary.port)]

            def replica() -> ServerProcess:
                port = free_port()
                return ServerProcess(binary, ["--port", str(port), *replica_of, *common], port)

            self.replica = start_serving(replica, deadline)
            self.nodes.append(self.replica)
            config = Path(self._dir.name) / "sentinel.conf"

            def sentinel() -> ServerProcess:
                port = free_port()
                config.write_text(  # a sentinel rewrites its own config: written afresh for each try
                    f"port {port}\nbind 127.0.0.1\ndir {self._dir.name}\n"
                    f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 1\n"
                    f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                    f"sentinel failover-timeout {SERVICE} 5000\n"
                )
                return ServerProcess(binary, [str(config), "--sentinel"], port, ready="+monitor master")

            self.sentinel = start_serving(sentinel, deadline)
            self.nodes.append(self.sentinel)
            self.wait_until(self._ready, deadline)
        except BaseException:
            self.close()
            raise
        self.url = f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}/0"

    def _ready(self) -> bool:
        return (
            self.primary_port() == self.primary.port
            and self._replica_synced()
            and self._sentinel_sees_replica()
        )

    def _sentinel_sees_replica(self) -> bool:
        """The sentinel has found the replica (from the primary's INFO, polled every 10 s) and
        finds it healthy: until then a failover is refused with NOGOODSLAVE."""
        try:
            with self.sentinel.client() as client:
                replicas = client.sentinel_slaves(SERVICE)
        except redis.RedisError:
            return False
        return any(
            r["port"] == self.replica.port
            and not (r["is_sdown"] or r["is_disconnected"])
            and r.get("master-link-status") == "ok"
            for r in replicas
        )

    def primary_port(self) -> int | None:
        """The primary's port as the sentinel names it now."""
        try:
            with self.sentinel.client() as client:
                address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        except redis.RedisError:
            return None
        return int(address[1]) if address else None

    def _replica_synced(self) -> bool:
        try:
            with self.replica.client() as client:
                return client.info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False

    @staticmethod
    def wait_until(condition: object, deadline: float) -> None:
        assert callable(condition)
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinel setup did not reach the expected state in time")
            time.sleep(0.05)  # polling another process's state against a deadline

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
        self._dir.cleanup()


@pytest.fixture
def redis_sentinel() -> Iterator[SentinelServers]:
    """A Sentinel-managed Redis of this test alone (it may fail the primary over)."""
    servers = SentinelServers()
    try:
        yield servers
    finally:
        servers.close()
