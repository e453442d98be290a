"""The store interface: what the core asks of its state, whatever holds it.

The engine, history, limits, usage, in-flight records and personas talk to `Store`;
`bot.state.redis_store.RedisStore` is the Redis implementation (docs/architecture.md,
"State and the Redis layout"). Values cross it encoded (history entries as JSON
strings, personas as flat hashes): their meaning stays with the callers.

Every method raises `StoreError` when the store cannot answer; the engine's breaker
(`bot.state.breaker.RedisState`) counts exactly that and `bot.state.resilience` says what a turn
does meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as redis
from redis.asyncio.client import Pipeline as ServerPipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ClusterError, RedisClusterException, TryAgainError

from bot.state.keys import ChannelScope, ConversationKey, Keys

# A single server (or the master Sentinel names), or a Redis Cluster (bot.state.store.connect).
Client = redis.Redis | RedisCluster
Pipeline = ServerPipeline | ClusterPipeline

# The errors of the interface: redis-py's own, so an outage is told apart from a bug by one
# `except`, and the breaker needs no translation layer. The cluster client adds the few of
# its own that are not `RedisError`s (no node holds a slot yet while a replica is promoted).
StoreError = (redis.RedisError, RedisClusterException)

# The errors that say Redis is away, not that a command was wrong (for callers that let the
# rest through: a script with a bug must not look like an outage).
Unreachable = (
    redis.ConnectionError, redis.TimeoutError, ClusterError, TryAgainError, RedisClusterException, OSError,
)

# Commands queued into a round trip another call sends (a turn's release, the upkeep's tick).
Queued = Callable[[Pipeline], object]

__all__ = [
    "Bounds", "ClaimState", "Client", "ConversationState", "FeedbackState", "InFlightState", "LeaseState",
    "LimitsRead", "LimitsState", "PersonaState", "Pipeline", "Queued", "RateRead", "RoundTrips", "Store",
    "StoreError", "TurnStart", "Unreachable", "UsageState",
]


@dataclass(frozen=True)
class Bounds:
    """How long a history is kept (seconds) and how many entries it keeps."""

    ttl: int
    max_turns: int


@dataclass(frozen=True)
class TurnStart:
    """What the round trip that starts a turn read."""

    history: list[str] | None  # None: another answer holds the conversation's lock
    persona: dict[str, str]  # the channel's persona hash, when asked for ({} otherwise)


@dataclass(frozen=True)
class RateRead:
    """A user's sliding window after this message was added to it."""

    count: int
    oldest: float | None  # the time of the oldest message in the window


@dataclass(frozen=True)
class LimitsRead:
    """What the round trip before a limited turn reads: the counters and the channel's persona."""

    rate: RateRead | None  # None: no per-user limit configured
    channel_tokens: int | None  # written today, without what this process has pending
    persona: dict[str, str]


class RoundTrips(Protocol):
    """Sending commands: what every part of the store has in common."""

    keys: Keys

    def pipeline(self) -> Pipeline:
        """A non-transactional pipeline: many commands, one round trip."""
        ...

    async def send(self, *queued: Queued) -> list[Any]:
        """What `queued` adds to a pipeline, in one round trip (none if it adds nothing)."""
        ...


class ClaimState(Protocol):
    async def claim(self, platform: str, event_id: str, ttl: int) -> bool:
        """True the first time `(platform, event_id)` is claimed within `ttl` seconds."""
        ...


class ConversationState(Protocol):
    """A conversation: the turn (two round trips), notes, backfill, forget."""

    async def start_turn(
        self, conversation: ConversationKey, token: str, user: str, bounds: Bounds, *,
        pending: Sequence[str] = (), ops: Sequence[Queued] = (), persona: ChannelScope | None = None,
    ) -> TurnStart:
        """One round trip: store `pending` and `ops` left by earlier turns, take the lock with
        `token`, append `user`, read the history (and the persona of `persona`)."""
        ...

    async def finish_turn(
        self, conversation: ConversationKey, token: str, answer: str, bounds: Bounds,
        deferred: Sequence[Queued] = (),
    ) -> None:
        """One round trip: append `answer` (if any), release the lock, run `deferred`."""
        ...

    async def renew_lock(self, conversation: ConversationKey, token: str) -> bool:
        """Extend the lock `token` took; False: it is not held with that token any more."""
        ...
    def unlock(self, conversation: ConversationKey, token: str) -> Queued:
        """Release the lock `token` took, queued for a later round trip (a release that failed
        when Redis went away, e.g. a cluster master mid-failover, is retried by the next turn)."""
        ...

    async def prepend(
        self, conversation: ConversationKey, entries: Sequence[str], bounds: Bounds
    ) -> None: ...
    async def note(self, conversation: ConversationKey, entry: str, bounds: Bounds) -> bool:
        """Append `entry` only if the history exists; whether it did."""
        ...

    async def exists(self, conversation: ConversationKey) -> bool: ...
    async def load(self, conversation: ConversationKey) -> list[str]: ...
    async def revise(
        self, conversation: ConversationKey, message_id: str, content: str, rewind: bool
    ) -> list[str] | None:
        """A person edited their message `message_id`. With `rewind`, when it is the last person's
        message and no answer holds the lock: drop it and everything after it, returning what was
        dropped. Otherwise: give its entry `content`, returning []. None: not in the history."""
        ...

    async def context(self, conversation: ConversationKey) -> dict[str, str]: ...
    async def save_context(self, conversation: ConversationKey, fields: dict[str, str], ttl: int) -> None:
        """Add `fields` to the conversation's context hash (kept `ttl` seconds from now)."""
        ...

    async def remove(self, conversation: ConversationKey, message_id: str) -> bool:
        """A person deleted their message `message_id`: drop its entry; whether there was one."""
        ...
    def leave_out(self, conversation: ConversationKey, refs: Sequence[str], note: str) -> Queued:
        """Give the history's files `refs` the note `note` (a file with a note is not sent to the
        model again), queued for a later round trip."""
        ...
    async def forget(self, conversation: ConversationKey, marker: str, bounds: Bounds) -> list[str]:
        """Replace the history by `marker`; returns what it held."""
        ...


class PersonaState(Protocol):
    async def persona(self, scope: ChannelScope) -> dict[str, str]: ...
    async def save_persona(self, scope: ChannelScope, fields: dict[str, str]) -> None: ...
    async def reset_persona(self, scope: ChannelScope) -> None: ...


class LimitsState(RoundTrips, Protocol):
    async def read_limits(
        self, rate: tuple[str, float, float] | None, tokens: tuple[ChannelScope, str] | None,
        persona: ChannelScope,
    ) -> LimitsRead:
        """One round trip: count one message in the window `rate` = (key, now, seconds), read
        the channel's tokens `tokens` = (scope, day) and the persona of `persona`."""
        ...

    async def take_in_window(self, key: str, now: float, window: float, limit: int) -> bool:
        """Count one more in the sliding window `key` unless that puts it over `limit` (then it
        is taken back out, so the person's next message is the one told about the limit)."""
        ...


class UsageState(RoundTrips, Protocol):
    """Usage is written with `send` (see bot.ops.usage.Usage.queue) and read here."""

    async def read_usage(
        self, days: Sequence[str]
    ) -> tuple[list[dict[str, dict[str, str]]], dict[str, str]]:
        """Each day's hashes by kind (`bot.state.keys.USAGE_KINDS`) and the display names, in
        one round trip."""
        ...


class InFlightState(RoundTrips, Protocol):
    """Records are written with `send` (see bot.ops.inflight.InFlight.queue) and swept here."""

    async def close_owner(self, owner: str) -> None:
        """Drop the heartbeat; drop the owner too if it left no records."""
        ...

    async def owners(self) -> set[str]: ...
    async def alive(self, owners: Sequence[str]) -> list[bool]: ...
    async def records(self, owner: str) -> dict[str, str]: ...
    async def take_record(self, owner: str, answer_id: str) -> bool:
        """Remove one record; True for exactly one caller."""
        ...

    async def drop_owner(self, owner: str) -> None: ...


class FeedbackState(Protocol):
    """Votes on finished answers (bot.conversations.feedback)."""

    def remember_answer(self, answer_id: str, fields: dict[str, str], ttl: int) -> Queued:
        """Commands that keep what an answer was, for a round trip someone else sends."""
        ...

    async def vote(
        self, answer_id: str, user_id: str, value: str, reason: str, at: float, ttl: int
    ) -> tuple[dict[str, str], str] | None:
        """Replace `user_id`'s vote on the answer (keeping its reason when `reason` is empty and
        the value unchanged) and move the totals; returns (the answer's record, the value before:
        "" if none), or None for an answer not on record."""
        ...

    async def feedback_totals(self) -> dict[str, str]: ...


class LeaseState(Protocol):
    """Named leases, each held by one process at a time (bot.ops.leases)."""

    async def hold_lease(self, name: str, holder: str, ttl_ms: int) -> str | None:
        """Take the lease `name` for `holder`, or renew it if `holder` has it, for `ttl_ms`.
        None when `holder` has it now; else who else holds it."""
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up if `holder` has it."""
        ...


class Store(
    ClaimState, ConversationState, PersonaState, LimitsState, UsageState, InFlightState,
    LeaseState, FeedbackState, Protocol,
):
    """All of the state, one per process (the engine's); each module asks for its part."""
