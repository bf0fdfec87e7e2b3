from tests.support.redis_cluster import private_redis_cluster, redis_cluster
from tests.support.redis_sentinel import redis_sentinel
from tests.support.redis_server import persistent_redis, private_redis, redis_server

__all__ = [
    "persistent_redis",
    "private_redis",
    "private_redis_cluster",
    "redis_cluster",
    "redis_sentinel",
    "redis_server",
]
