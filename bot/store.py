"""The Redis connection. The key layout is `bot.state.keys` (docs/architecture.md,
"State and the Redis layout").

With `REDIS_URL` unset the bot runs on an embedded in-memory Redis (fakeredis,
Lua included), so every other module talks to one interface either way.
"""

from __future__ import annotations

import logging

import redis.asyncio as redis
from redis.driver_info import DriverInfo

from bot.config import Settings

log = logging.getLogger(__name__)

# Built once: left to redis-py, each new connection looks its version up again (~1 ms of CPU).
DRIVER_INFO = DriverInfo()


def connect(settings: Settings) -> redis.Redis:
    if settings.redis_url:
        # A blocking pool waits for a free connection under a burst instead of failing;
        # every live answer needs at most one at a time, plus a few for intake.
        pool = redis.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.max_concurrent_replies + 32,
            timeout=30,
            decode_responses=True,
            health_check_interval=30,
            socket_connect_timeout=5,
            socket_timeout=10,
            retry_on_timeout=True,
            driver_info=DRIVER_INFO,
        )
        return redis.Redis.from_pool(pool)
    import fakeredis  # only needed for the embedded store

    log.warning(
        "REDIS_URL is not set: using the embedded in-memory store (one process, nothing kept "
        "across restarts). Set REDIS_URL=redis://host:6379/0 for production."
    )
    return fakeredis.FakeAsyncRedis(decode_responses=True)
