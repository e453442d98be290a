"""Abuse and cost limits, checked before any model call.

- `BLOCKED_USERS` and `ALLOWED_CHANNELS` come from the settings alone: a blocked
  user or a channel not on the list is ignored silently, with no Redis call.
- `USER_MESSAGES_PER_MINUTE`: a sliding window of the last 60 s per user (a
  sorted set of message times). The message that crosses the limit gets a
  friendly reply saying when to try again; further ones inside the window are
  ignored silently, so a flood does not make the bot flood back.
- `CHANNEL_DAILY_TOKENS`: prompt plus completion tokens a channel may use per UTC
  day (`bot.ops.usage` counts them); once spent, each message gets a reply saying
  when the budget resets.

A tool step (one round of the model's tool calls, bot/tools/loop.py) counts in the same
per-user window as a message: `tool_step` says whether the asker may take one more.

Both counted limits are read in one round trip (`LimitsState.read_limits`), together
with the persona the answer needs anyway, so they cost no extra round trip.

Entries of both lists may be a bare id (`C0123`, `U0456`), `platform:id`
(`slack:C0123`) or, for channels, `platform:workspace:channel`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.clock import Clock, SystemClock
from bot.config import Settings
from bot.contract import Author, ConversationKey
from bot.ops.usage import Usage, today
from bot.state.interface import LimitsState
from bot.state.keys import CHANNEL

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
    def __init__(
        self, settings: Settings, store: LimitsState, usage: Usage, clock: Clock | None = None
    ) -> None:
        self._store = store
        self.clock: Clock = clock or SystemClock()  # the per-user window's time
        self._keys = store.keys
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
        self, conversation: ConversationKey, author: Author
    ) -> tuple[Refusal | None, dict[str, str]]:
        """The counted limits, in one round trip with the channel's persona hash (read anyway).

        Returns the refusal (if any) and the persona hash read.
        """
        now = self.clock.now()
        day = today()
        scope = conversation.channel_scope
        rate_key = self._keys.rate(conversation.platform, author.id)
        read = await self._store.read_limits(
            (rate_key, now, RATE_WINDOW) if self.per_minute else None,
            (scope, day) if self.daily_tokens else None,
            scope,
        )
        if read.rate is not None:
            refusal = self._rate_refusal(read.rate.count, read.rate.oldest, now)
            if refusal:
                return refusal, read.persona
        if read.channel_tokens is not None:
            used = read.channel_tokens + self.usage.pending_tokens(day, CHANNEL, str(scope))
            if used >= self.daily_tokens:
                return self._budget_refusal(used), read.persona
        return None, read.persona

    async def tool_step(self, conversation: ConversationKey, author: Author) -> bool:
        """Whether the asker may take one more tool step (counted in their per-minute window,
        like a message); a step refused is not counted."""
        if not self.per_minute:
            return True
        key = self._keys.rate(conversation.platform, author.id)
        return await self._store.take_in_window(key, self.clock.now(), RATE_WINDOW, self.per_minute)

    def _rate_refusal(self, count: int, oldest: float | None, now: float) -> Refusal | None:
        if count <= self.per_minute:
            return None
        if count > self.per_minute + 1:
            return Refusal(USER_RATE)  # already told within this minute
        wait = RATE_WINDOW - (now - oldest) if oldest is not None else RATE_WINDOW
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
