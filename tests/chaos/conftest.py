from tests.support.redis_server import persistent_redis

__all__ = ["persistent_redis"]
