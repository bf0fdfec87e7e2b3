"""A real Redis Cluster on loopback: three primaries, three replicas, started from the tests.

Six ``redis-server --cluster-enabled yes`` processes on free ports (data and cluster bus), joined by
``redis-cli --cluster create --cluster-replicas 1``; ready once every node says ``cluster_state:ok``
and every replica's link to its primary is up (polled against a deadline, no fixed sleeps). No
persistence. Stopped by the PIDs we started. Import the fixtures into a ``conftest.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from tests.support.redis_process import ServerProcess, start_serving
from tests.support.servers import free_port

_START_TIMEOUT = 30.0
# Short, so a killed primary is judged failed (and its replica promoted) within a couple of seconds.
NODE_TIMEOUT_MS = 1000


class ClusterNode(ServerProcess):
    """A ``redis-server --cluster-enabled yes`` on free ports (data and cluster bus)."""

    def __init__(self, binary: str, directory: str) -> None:
        port, bus_port = free_port(), free_port()
        args = [
            "--port", str(port),
            "--cluster-port", str(bus_port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--dir", directory,
            "--save", "", "--appendonly", "no",
        ]  # fmt: skip
        super().__init__(binary, args, port)


class RedisClusterServers:
    """Six nodes, three primaries with a replica each; :attr:`url` names one node, as a user would."""

    def __init__(self) -> None:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            pytest.fail("redis-server/redis-cli are not installed: run `make test`", pytrace=False)
        self._dir = tempfile.TemporaryDirectory(prefix="ssegate-cluster-")
        self.nodes: list[ClusterNode] = []
        try:
            deadline = time.monotonic() + _START_TIMEOUT
            for _ in range(6):
                self.nodes.append(start_serving(lambda: ClusterNode(binary, self._dir.name), deadline))
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=_START_TIMEOUT,
            )
            self.wait_healthy(deadline)
        except BaseException:
            self.close()
            raise
        self.url = f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def wait_healthy(self, deadline: float) -> None:
        """Until every live node says ``cluster_state:ok`` and every live replica is in sync."""
        while True:
            if all(self._healthy(node) for node in self.nodes if node.alive):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become healthy in time")
            time.sleep(0.05)  # polling a deadline-bounded condition: nothing to await across processes

    @staticmethod
    def _healthy(node: ClusterNode) -> bool:
        try:
            with node.client() as client:
                if client.cluster("INFO")["cluster_state"] != "ok":
                    return False
                replication = client.info("replication")
        except redis.RedisError:
            return False
        return replication["role"] == "master" or replication.get("master_link_status") == "up"

    def primary_of(self, key: str) -> ClusterNode:
        """The live node serving ``key``'s slot now (as the live nodes see it)."""
        slot = key_slot(key.encode())
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as client:
                if client.info("replication")["role"] != "master":
                    continue
                nodes = client.execute_command("CLUSTER NODES")
            for info in nodes.values():
                if "myself" in info["flags"] and any(int(lo) <= slot <= int(hi) for lo, hi in info["slots"]):
                    return node
        raise LookupError(f"no live primary serves slot {slot}")

    def replica_of(self, primary: ClusterNode) -> ClusterNode:
        """The live replica of ``primary``."""
        for node in self.nodes:
            if node.alive and node is not primary:
                with node.client() as client:
                    info = client.info("replication")
                if info["role"] == "slave" and int(info["master_port"]) == primary.port:
                    return node
        raise LookupError(f"no live replica of port {primary.port}")

    def describe(self) -> str:
        """Each node's port, role and cluster state as it says now (for a failure's message)."""
        said = []
        for node in self.nodes:
            if not node.alive:
                said.append(f"{node.port} dead")
                continue
            try:
                with node.client() as client:
                    role = client.info("replication")["role"]
                    state = client.cluster("INFO")["cluster_state"]
            except redis.RedisError as exc:
                role, state = "?", repr(exc)
            said.append(f"{node.port} {role} {state}")
        return ", ".join(said)

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
        self._dir.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A Redis Cluster shared by one worker's tests (use unique keys; do not kill its nodes)."""
    cluster = RedisClusterServers()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def private_redis_cluster() -> Iterator[RedisClusterServers]:
    """A Redis Cluster of this test alone, whose nodes the test may kill."""
    cluster = RedisClusterServers()
    try:
        yield cluster
    finally:
        cluster.close()
