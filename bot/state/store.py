"""The Redis connection. The key layout is `bot.state.keys` (docs/architecture.md,
"State and the Redis layout"); running on a Cluster or Sentinel is docs/operations.md's
"Redis Cluster and Sentinel".

Three shapes of Redis, one interface (`Client`):

- a single server (`REDIS_URL`);
- a Redis Cluster (`REDIS_URL` names any node; `REDIS_CLUSTER=true`, or found out at start
  with `INFO cluster`): redis-py's cluster client, which follows MOVED/ASK and the
  promotions of a failover, and splits a non-transactional pipeline per node;
- a master watched by Redis Sentinel (`REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`): redis-py's
  Sentinel client asks the sentinels where the master is, again after a failover.

With `REDIS_URL` unset the bot runs on an embedded in-memory Redis (fakeredis,
Lua included), so every other module talks to one interface either way.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.driver_info import DriverInfo

from bot.config import Settings, redact_url
from bot.state.interface import Client

log = logging.getLogger(__name__)

# Built once: left to redis-py, each new connection looks its version up again (~1 ms of CPU).
DRIVER_INFO = DriverInfo()

# What every connection shares, whichever shape the Redis has.
_CONNECTION: dict[str, Any] = {
    "decode_responses": True,
    "socket_connect_timeout": 5,
    "socket_timeout": 10,
    "driver_info": DRIVER_INFO,
}


async def connect(settings: Settings) -> Client:
    """The client the settings ask for (it connects lazily, except to find out about a cluster)."""
    if settings.redis_sentinels:
        return _sentinel(settings)
    if settings.redis_url:
        cluster = settings.redis_cluster
        if cluster is None:
            cluster = await is_cluster(settings.redis_url)
            log.info(
                "REDIS_CLUSTER is not set: %s answers `INFO cluster` with cluster_enabled:%d, so "
                "the bot uses the %s client", redact_url(settings.redis_url), cluster,
                "Redis Cluster" if cluster else "single-server",
            )
        if cluster:
            return _cluster(settings, settings.redis_url)
        return _single(settings, settings.redis_url)
    import fakeredis  # only needed for the embedded store

    log.warning(
        "REDIS_URL is not set: using the embedded in-memory store (one process, nothing kept "
        "across restarts). Set REDIS_URL=redis://host:6379/0 for production."
    )
    return fakeredis.FakeAsyncRedis(decode_responses=True)


async def is_cluster(url: str) -> bool:
    """Whether the server at `url` is a node of a Redis Cluster. Unreachable: False (the
    single-server client then meets the outage like any other, and the breaker says so)."""
    probe = redis.Redis.from_url(url, **_CONNECTION)
    try:
        info = await probe.info("cluster")
    except redis.RedisError as exc:
        log.warning("could not ask %s whether it is a cluster (%s): using the single-server "
                    "client; set REDIS_CLUSTER to decide", redact_url(url), type(exc).__name__)
        return False
    finally:
        await probe.aclose()
    return bool(info.get("cluster_enabled"))


def _single(settings: Settings, url: str) -> redis.Redis:
    # A blocking pool waits for a free connection under a burst instead of failing;
    # every live answer needs at most one at a time, plus a few for intake.
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.max_concurrent_replies + 32,
        timeout=30,
        health_check_interval=30,
        retry_on_timeout=True,
        **_CONNECTION,
    )
    return redis.Redis.from_pool(pool)


def _cluster(settings: Settings, url: str) -> RedisCluster:
    # One pool per node; the client retries a command on a MOVED node, a refused connection
    # or CLUSTERDOWN while a replica is promoted, re-reading the slots as it goes.
    return RedisCluster.from_url(
        url,
        max_connections=settings.max_concurrent_replies + 32,
        health_check_interval=30,
        **_CONNECTION,
    )


def _sentinel(settings: Settings) -> redis.Redis:
    """The master the sentinels name; after a failover, the next connection goes to the new one.
    REDIS_URL (if set) gives the password, database and TLS."""
    assert settings.redis_sentinel_master is not None  # bot.config requires it with sentinels
    url = redis.connection.parse_url(settings.redis_url) if settings.redis_url else {}
    master: dict[str, Any] = {
        key: url[key] for key in ("db", "username", "password") if url.get(key) is not None
    }
    if url.get("connection_class") is redis.SSLConnection:
        master["ssl"] = True
    sentinel = Sentinel(
        list(settings.redis_sentinels),
        sentinel_kwargs={"socket_connect_timeout": 5, "socket_timeout": 5},
        **_CONNECTION,
    )
    log.info(
        "Redis through Sentinel: master %r as named by %s", settings.redis_sentinel_master,
        ",".join(f"{host}:{port}" for host, port in settings.redis_sentinels),
    )
    client: redis.Redis = sentinel.master_for(
        settings.redis_sentinel_master,
        max_connections=settings.max_concurrent_replies + 32,
        health_check_interval=30,
        retry_on_timeout=True,
        **master,
    )
    return client


async def unreachable(settings: Settings, timeout: float) -> str | None:
    """Why the configured Redis does not answer PING within `timeout` s, or None if it does."""
    import asyncio

    try:
        client = await asyncio.wait_for(connect(settings), timeout)
    except Exception as exc:  # whatever it is, the store cannot be used
        return str(exc) or type(exc).__name__
    try:
        await asyncio.wait_for(client.ping(), timeout)
    except Exception as exc:
        return str(exc) or type(exc).__name__
    finally:
        await client.aclose()
    return None
