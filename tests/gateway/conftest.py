from tests.support.redis_server import persistent_redis, private_redis, redis_server

__all__ = ["persistent_redis", "private_redis", "redis_server"]
