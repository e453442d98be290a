"""The store interface: what the core asks of its state, whatever holds it.

The engine, limits, usage, in-flight records and personas talk to these types;
`bot.state.redis_store` is the Redis implementation (docs/architecture.md,
"State and the Redis layout"). Every method raises `StoreError` when the store
cannot answer; the engine's breaker (`bot.breaker.RedisState`) counts exactly
that and `bot.resilience` says what a turn does meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from bot.contract import ChannelScope
from bot.state.keys import Keys

if TYPE_CHECKING:
    from bot.contract import ConversationKey

# The one error type of the interface: redis-py's own, so an outage is told apart from a bug
# by one `except` and the breaker needs no translation layer (none is worth its cost here).
StoreError = redis.RedisError

# Commands queued into a round trip another call sends (a turn's release, the upkeep's tick).
Queued = Callable[[Pipeline], object]

__all__ = [
    "Claims", "LimitsRead", "Pipeline", "Queued", "RateRead", "Store", "StoreError",
]


@dataclass(frozen=True)
class RateRead:
    """A user's sliding window after this message was added to it."""

    count: int
    oldest: float | None  # the time of the oldest message in the window


@dataclass(frozen=True)
class LimitsRead:
    """What one round trip before a turn reads: the counters and the channel's persona hash."""

    rate: RateRead | None  # None: no per-user limit configured
    channel_tokens: int | None  # written today, without what this process has pending
    persona: dict[str, str]


class Claims(Protocol):
    async def claim(self, platform: str, event_id: str, ttl: int) -> bool:
        """True the first time `(platform, event_id)` is claimed within `ttl` seconds."""
        ...


class Store(Claims, Protocol):
    """The state every module of the core reaches through (one per process)."""

    keys: Keys

    def pipeline(self) -> Pipeline:
        """A non-transactional pipeline: many commands, one round trip."""
        ...

    async def read_limits(
        self, rate: tuple[str, float, float] | None, tokens: tuple[ChannelScope, str] | None,
        persona: ChannelScope,
    ) -> LimitsRead:
        """Count one message in the window `rate` = (key, now, seconds), read the channel's
        tokens `tokens` = (scope, day) and the persona of `persona`, in one round trip."""
        ...

    async def exists(self, conversation: ConversationKey) -> bool:
        """Whether a conversation's history is kept."""
        ...
