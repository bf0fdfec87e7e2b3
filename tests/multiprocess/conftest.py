from collections.abc import Iterator

import pytest

from tests.support.redis_cluster import RedisClusterServers, private_redis_cluster, redis_cluster
from tests.support.redis_server import RedisServer

__all__ = ["private_redis_cluster", "redis_cluster", "redis_url"]


# The cluster's first test also starts it (six servers, a few seconds): a longer time-out.
CLUSTER = pytest.param("cluster", marks=[pytest.mark.cluster, pytest.mark.timeout(120)])


@pytest.fixture(scope="module", params=["redis", CLUSTER])
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL ssegate processes are started with: one redis-server of this module's, or a node of
    this worker's Redis Cluster (the same tests, on the deployment most teams scale out to)."""
    if request.param == "cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        yield cluster.url
        return
    server = RedisServer()
    try:
        yield server.url
    finally:
        server.close()
