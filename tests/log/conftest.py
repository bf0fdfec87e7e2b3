from tests.support.redis_server import private_redis, redis_server

__all__ = ["private_redis", "redis_server"]
