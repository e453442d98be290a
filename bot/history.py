"""Role-tagged conversation histories in Redis, and the per-conversation lock.

A turn touches Redis twice: `begin` takes the lock, appends the user's
message and reads the history (one Lua script, with the persona read in the
same round trip); `finish` appends the answer and releases the lock (another,
with whatever else the turn deferred). Both refresh the TTL and cap the length.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import redis.asyncio as redis

from bot import metrics
from bot.breaker import RedisState
from bot.contract import ConversationKey, HistoryEntry
from bot.resilience import Unsaved
from bot.state.keys import Keys

log = logging.getLogger(__name__)

LOCK_MS = 30_000  # short, so a crashed process frees the conversation quickly
LOCK_RENEW_EVERY = 10.0
LOCK_WAIT_LIMIT = 300.0

_BEGIN = """
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
return redis.call('LRANGE', KEYS[1], 0, -1)
"""

_FINISH = """
if ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[1], ARGV[4])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""

_NOTE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


# A history that holds only this marker was cleared on purpose (/forget): the engine
# must not rebuild it from the platform's thread.
FORGOTTEN = "forgotten"


def joined_answers(entries: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    """Entries rebuilt from a platform, with an answer split over several messages joined again."""
    joined: list[HistoryEntry] = []
    for entry in entries:
        if entry.role == "assistant" and joined and joined[-1].role == "assistant":
            first = joined[-1]
            joined[-1] = HistoryEntry(
                "assistant", f"{first.content}\n{entry.content}", msg_id=first.msg_id, ts=first.ts
            )
        else:
            joined.append(entry)
    return joined


class ConversationBusy(Exception):
    """Another answer in this conversation held the lock for too long."""


def encode(entry: HistoryEntry) -> str:
    data = {k: v for k, v in asdict(entry).items() if v or k in ("role", "content")}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def decode(raw: str) -> HistoryEntry | None:
    try:
        data = json.loads(raw)
        return HistoryEntry(
            role=str(data["role"]),
            content=str(data["content"]),
            author=str(data.get("author", "")),
            msg_id=str(data.get("msg_id", "")),
            ts=float(data.get("ts", 0.0)),
            interrupted=bool(data.get("interrupted", False)),
        )
    except (ValueError, KeyError, TypeError):
        return None  # a damaged entry must not break the conversation


class Conversations:
    def __init__(
        self, client: redis.Redis, keys: Keys, ttl: int, max_turns: int,
        state: RedisState | None = None,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._ttl = ttl
        self._max_turns = max_turns
        self._renew = client.register_script(_RENEW)
        self._note = client.register_script(_NOTE)
        self.state = state or RedisState()
        self.unsaved = Unsaved()

    @asynccontextmanager
    async def turn(
        self, conversation: ConversationKey, user: HistoryEntry, read_along: str | None = None
    ) -> AsyncIterator[LockedTurn]:
        """Hold the conversation's lock for one answer; the history includes `user` last.

        `read_along` names a hash read in the same round trip that takes the lock
        (the channel's persona); commands queued with `LockedTurn.defer` go out in
        the same round trip that releases it.

        With Redis unreachable the turn goes on without it (`LockedTurn.stored` is
        False): no lock across replicas, the history is `user` alone (the engine
        rebuilds the rest from the platform), and the turn is kept in memory until the
        conversation can store it. Storing the answer never fails the turn.
        """
        keys = [self._keys.history(conversation), self._keys.lock(conversation)]
        token = secrets.token_hex(8)
        locked: LockedTurn | None = None
        if self.state.worth_trying:
            try:
                locked = await self._begin(conversation, keys, token, user, read_along)
                self.state.succeeded()
            except redis.RedisError as exc:
                self.state.failed("history", exc)
        if locked is None:
            locked = LockedTurn([user], {}, stored=False)
            try:
                yield locked
            finally:
                self.unsaved.keep(conversation, [user], locked.deferred)
                if locked.answer is not None:
                    self.unsaved.keep(conversation, [locked.answer])
            return
        renewer = asyncio.create_task(self._keep_alive(keys[1], token))
        try:
            yield locked
        finally:
            renewer.cancel()
            # Shielded: a cancelled answer must still release its lock and keep its text.
            await asyncio.shield(self._release(conversation, keys, token, locked))

    async def _begin(
        self, conversation: ConversationKey, keys: list[str], token: str, user: HistoryEntry,
        read_along: str | None,
    ) -> LockedTurn:
        pending, ops = self.unsaved.take(conversation)
        delay = 0.02
        deadline = time.monotonic() + LOCK_WAIT_LIMIT
        while True:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    # What an earlier turn could not store goes first, where the history exists
                    # (else the platform's thread brings it back with the rest).
                    for entry in pending:
                        pipe.eval(_NOTE, 1, keys[0], encode(entry), self._max_turns, self._ttl)
                    for queue in ops:
                        queue(pipe)
                    catch_up = len(pipe.command_stack)  # results to skip: a queue may add several
                    # EVAL rather than EVALSHA: a pipeline cannot fall back on NOSCRIPT, and
                    # Redis caches the compiled script either way.
                    pipe.eval(_BEGIN, 2, *keys, token, LOCK_MS, encode(user), self._max_turns, self._ttl)
                    if read_along:
                        pipe.hgetall(read_along)
                    results = await pipe.execute()
            except redis.RedisError:
                self.unsaved.keep(conversation, pending, ops)
                raise
            raw, *read = results[catch_up:]
            pending, ops = [], []
            if raw is not None:
                return LockedTurn([e for e in map(decode, raw) if e is not None], read[0] if read else {})
            if time.monotonic() > deadline:
                raise ConversationBusy(str(conversation))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _release(
        self, conversation: ConversationKey, keys: list[str], token: str, locked: LockedTurn
    ) -> None:
        answer = encode(locked.answer) if locked.answer else ""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.eval(_FINISH, 2, *keys, token, self._max_turns, self._ttl, answer)
                for queue in locked.deferred:
                    queue(pipe)
                await pipe.execute()
        except redis.RedisError as exc:
            # The answer is on screen already: keep it for later, never fail the turn for it.
            # The lock expires by itself within LOCK_MS.
            self.state.failed("store", exc)
            metrics.after_answer_failure("store")
            log.warning("could not store the answer in %s (kept in memory): %s", conversation, exc)
            self.unsaved.keep(conversation, [locked.answer] if locked.answer else [], locked.deferred)

    async def _keep_alive(self, lock_key: str, token: str) -> None:
        while True:
            await asyncio.sleep(LOCK_RENEW_EVERY)
            try:
                await self._renew([lock_key], [token, LOCK_MS])
            except redis.RedisError as exc:
                # The answer goes on; if Redis is gone for good the lock simply expires.
                log.info("could not renew a conversation lock: %s", exc)

    async def prepend(self, conversation: ConversationKey, earlier: Sequence[HistoryEntry]) -> None:
        """Put messages rebuilt from the platform before what the store has."""
        if not earlier:
            return
        key = self._keys.history(conversation)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(key, *[encode(e) for e in reversed(earlier)])
            pipe.ltrim(key, -self._max_turns, -1)
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def note(self, conversation: ConversationKey, entry: HistoryEntry) -> bool:
        """Add a message as context only, if the conversation is one the store keeps."""
        keys = [self._keys.history(conversation)]
        return bool(await self._note(keys, [encode(entry), self._max_turns, self._ttl]))

    async def exists(self, conversation: ConversationKey) -> bool:
        return bool(await self._redis.exists(self._keys.history(conversation)))

    async def load(self, conversation: ConversationKey) -> list[HistoryEntry]:
        raw: list[str] = await self._redis.lrange(self._keys.history(conversation), 0, -1)  # type: ignore[assignment]
        return [e for e in map(decode, raw) if e is not None]

    async def forget(self, conversation: ConversationKey) -> bool:
        """Clear the history, leaving a marker so it is not rebuilt from the platform."""
        key = self._keys.history(conversation)
        marker = encode(HistoryEntry(role=FORGOTTEN, content="", ts=time.time()))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            pipe.rpush(key, marker)
            pipe.expire(key, self._ttl)
            before, *_ = await pipe.execute()
        return any(json.loads(raw).get("role") != FORGOTTEN for raw in before)


Deferral = Callable[[Callable[[Any], object]], None]


class LockedTurn:
    """What one locked turn sees (the history) and leaves behind (the answer)."""

    def __init__(
        self, history: list[HistoryEntry], read_along: dict[str, str], *, stored: bool = True
    ) -> None:
        self.history = history
        self.read_along = read_along
        self.stored = stored  # False: Redis was unreachable; nothing held or read there
        self.answer: HistoryEntry | None = None
        self.deferred: list[Callable[[Any], object]] = []

    def defer(self, queue: Callable[[Any], object]) -> None:
        """Have `queue(pipeline)` add commands to the round trip that releases the lock."""
        self.deferred.append(queue)
