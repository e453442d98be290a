"""Reading the installations straight from Redis, as an operator would."""

from __future__ import annotations

import redis.asyncio as redis

from bot.state.keys import Keys


async def installation_keys(client: redis.Redis, keys: Keys) -> set[str]:
    pattern = keys.installation("slack", "*")
    return {str(key) async for key in client.scan_iter(match=pattern)}
