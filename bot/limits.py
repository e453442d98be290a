"""Abuse and cost limits, checked before any model call.

- `BLOCKED_USERS` and `ALLOWED_CHANNELS` come from the settings alone: a blocked
  user or a channel not on the list is ignored silently, with no Redis call.
- `USER_MESSAGES_PER_MINUTE`: a sliding window of the last 60 s per user (a
  sorted set of message times). The message that crosses the limit gets a
  friendly reply saying when to try again; further ones inside the window are
  ignored silently, so a flood does not make the bot flood back.
- `CHANNEL_DAILY_TOKENS`: prompt plus completion tokens a channel may use per UTC
  day (`bot.usage` counts them); once spent, each message gets a reply saying
  when the budget resets.

Both counted limits go to Redis in one pipeline, together with the persona read
the answer needs anyway, so they cost no extra round trip.

Entries of both lists may be a bare id (`C0123`, `U0456`), `platform:id`
(`slack:C0123`) or, for channels, `platform:workspace:channel`.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as redis

from bot.config import Settings
from bot.contract import Author, ConversationKey
from bot.usage import Usage, today

RATE_WINDOW = 60.0

BLOCKED_USER = "blocked_user"
CHANNEL_NOT_ALLOWED = "channel_not_allowed"
USER_RATE = "user_rate"
CHANNEL_TOKENS = "channel_tokens"


@dataclass(frozen=True)
class Refusal:
    """Why a message gets no model call; `message` is what the person is told (None: nothing)."""

    reason: str
    message: str | None = None


class Limits:
    def __init__(self, settings: Settings, client: redis.Redis, prefix: str, usage: Usage) -> None:
        self._redis = client
        self.prefix = prefix
        self.usage = usage
        self.per_minute = settings.user_messages_per_minute
        self.daily_tokens = settings.channel_daily_tokens
        self.allowed = settings.allowed_channels
        self.blocked = settings.blocked_users

    @property
    def counted(self) -> bool:
        """Whether any limit needs Redis (else `check` is never called)."""
        return bool(self.per_minute or self.daily_tokens)

    def screen(self, conversation: ConversationKey, author: Author) -> Refusal | None:
        """The lists from the settings: no I/O."""
        platform = conversation.platform
        if self.blocked & {author.id, f"{platform}:{author.id}"}:
            return Refusal(BLOCKED_USER)
        if self.allowed and not self.allowed & {
            conversation.channel,
            f"{platform}:{conversation.channel}",
            str(conversation.channel_scope),
        }:
            return Refusal(CHANNEL_NOT_ALLOWED)
        return None

    async def check(
        self, conversation: ConversationKey, author: Author, *, also_hgetall: str
    ) -> tuple[Refusal | None, dict[str, str]]:
        """The counted limits, in one pipeline with an HGETALL of `also_hgetall` (the persona).

        Returns the refusal (if any) and the hash read.
        """
        now = time.time()
        day = today()
        scope = conversation.channel_scope
        rate_key = f"{self.prefix}:rate:{conversation.platform}:{author.id}"
        async with self._redis.pipeline(transaction=False) as pipe:
            if self.per_minute:
                pipe.zremrangebyscore(rate_key, "-inf", now - RATE_WINDOW)
                pipe.zadd(rate_key, {f"{now:.6f}:{secrets.token_hex(3)}": now})
                pipe.zcard(rate_key)
                pipe.zrange(rate_key, 0, 0, withscores=True)
                pipe.expire(rate_key, math.ceil(RATE_WINDOW) + 1)
            if self.daily_tokens:
                self.usage.queue_channel_tokens(pipe, scope, day)
            pipe.hgetall(also_hgetall)
            results: list[Any] = await pipe.execute()
        extra: dict[str, str] = results.pop()
        if self.per_minute:
            _, _, count, oldest, _ = results[:5]
            results = results[5:]
            refusal = self._rate_refusal(int(count), oldest, now)
            if refusal:
                return refusal, extra
        if self.daily_tokens:
            used = self.usage.channel_tokens_from(results[0], scope, day)
            if used >= self.daily_tokens:
                return self._budget_refusal(used), extra
        return None, extra

    def _rate_refusal(self, count: int, oldest: list[tuple[str, float]], now: float) -> Refusal | None:
        if count <= self.per_minute:
            return None
        if count > self.per_minute + 1:
            return Refusal(USER_RATE)  # already told within this minute
        wait = RATE_WINDOW - (now - oldest[0][1]) if oldest else RATE_WINDOW
        per = "message" if self.per_minute == 1 else "messages"
        return Refusal(
            USER_RATE,
            f"You're sending messages faster than I can take them: up to {self.per_minute} "
            f"{per} a minute. Please try again in about {max(1, math.ceil(wait))} seconds.",
        )

    def _budget_refusal(self, used: int) -> Refusal:
        now = datetime.now(UTC)
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        minutes = max(1, math.ceil((midnight - now).total_seconds() / 60))
        hours, minutes = divmod(minutes, 60)
        when = f"{hours} h {minutes} min" if hours else f"{minutes} min"
        return Refusal(
            CHANNEL_TOKENS,
            f"This channel has used its daily budget of {self.daily_tokens:,} model tokens "
            f"({used:,} so far today). It resets at midnight UTC, in {when}.",
        )


COMMAND_REFUSALS = {
    BLOCKED_USER: "Sorry, I can't take commands from you.",
    CHANNEL_NOT_ALLOWED: "I'm not enabled in this channel, so there is nothing to set here.",
}
