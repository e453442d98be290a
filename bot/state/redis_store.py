"""The Redis implementation of `bot.state.interface.Store`.

The conversation turn (its Lua scripts) stays in `bot.history.Conversations`,
built on this store's client and keys; what the engine and the limits ask
beyond it is here, so no other module of the core calls redis-py for them.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from bot.contract import ChannelScope, ConversationKey
from bot.state.interface import LimitsRead, RateRead
from bot.state.keys import Keys
from bot.usage import CHANNEL


class RedisStore:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)

    def pipeline(self) -> Pipeline:
        return self.client.pipeline(transaction=False)

    async def claim(self, platform: str, event_id: str, ttl: int) -> bool:
        return bool(await self.client.set(self.keys.seen(platform, event_id), "1", nx=True, ex=ttl))

    async def exists(self, conversation: ConversationKey) -> bool:
        return bool(await self.client.exists(self.keys.history(conversation)))

    async def read_limits(
        self, rate: tuple[str, float, float] | None, tokens: tuple[ChannelScope, str] | None,
        persona: ChannelScope,
    ) -> LimitsRead:
        async with self.pipeline() as pipe:
            if rate is not None:
                key, now, window = rate
                pipe.zremrangebyscore(key, "-inf", now - window)
                pipe.zadd(key, {f"{now:.6f}:{secrets.token_hex(3)}": now})
                pipe.zcard(key)
                pipe.zrange(key, 0, 0, withscores=True)
                pipe.expire(key, math.ceil(window) + 1)
            if tokens is not None:
                scope, day = tokens
                pipe.hmget(self.keys.usage(day, CHANNEL), [f"{scope}|in", f"{scope}|out"])
            pipe.hgetall(self.keys.persona(persona))
            results: list[Any] = await pipe.execute()
        # Named, not sliced by position by the caller: each part is taken off in order here.
        hash_read: dict[str, str] = results.pop()
        rate_read: RateRead | None = None
        if rate is not None:
            _, _, count, oldest, _ = results[:5]
            results = results[5:]
            rate_read = RateRead(int(count), float(oldest[0][1]) if oldest else None)
        channel_tokens: int | None = None
        if tokens is not None:
            channel_tokens = sum(int(v) for v in results[0] if v)
        return LimitsRead(rate_read, channel_tokens, hash_read)
