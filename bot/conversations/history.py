"""Role-tagged conversation histories in Redis, and the per-conversation lock.

A turn touches the store twice (`bot.state.interface.Store`): `start_turn` takes the
lock, appends the user's message and reads the history (one Lua script, with the
persona read in the same round trip); `finish_turn` appends the answer and releases
the lock (another, with whatever else the turn deferred). Both refresh the TTL and
cap the length.
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

from bot.contract import Attachment, ChannelScope, ConversationKey, HistoryEntry
from bot.ops import metrics
from bot.state.breaker import RedisState
from bot.state.interface import Bounds, ConversationState, Queued, StoreError
from bot.state.resilience import Unsaved

log = logging.getLogger(__name__)

LOCK_RENEW_EVERY = 10.0
LOCK_WAIT_LIMIT = 300.0

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
    """One entry as stored. Files keep their extracted text and their reference, never their
    bytes: an image is fetched again when a turn is replayed (bot/files/attachments.py)."""
    data = {k: v for k, v in asdict(entry).items() if v or k in ("role", "content")}
    if entry.attachments:
        data["attachments"] = [
            {k: v for k, v in asdict(a).items() if v is not None and v != ""} for a in entry.attachments
        ]
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _attachment(data: dict[str, object]) -> Attachment:
    text = data.get("text")
    size = data.get("size", 0)
    return Attachment(
        name=str(data.get("name", "file")),
        mime=str(data.get("mime", "")),
        size=size if isinstance(size, int) else 0,
        ref=str(data.get("ref", "")),
        text=None if text is None else str(text),
        note=str(data.get("note", "")),
    )


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
            stopped=bool(data.get("stopped", False)),
            more_ids=tuple(str(i) for i in data.get("more_ids") or ()),
            attachments=tuple(_attachment(a) for a in data.get("attachments", ()) if isinstance(a, dict)),
            tools=str(data.get("tools", "")),
        )
    except (ValueError, KeyError, TypeError):
        return None  # a damaged entry must not break the conversation


class Conversations:
    """A conversation's turns over the store: the lock, the breaker, what waits in memory."""

    def __init__(
        self, store: ConversationState, ttl: int, max_turns: int, state: RedisState | None = None,
    ) -> None:
        self._store = store
        self._bounds = Bounds(ttl, max_turns)
        self.state = state or RedisState()
        self.unsaved = Unsaved()

    @asynccontextmanager
    async def turn(
        self, conversation: ConversationKey, user: HistoryEntry, persona: ChannelScope | None = None
    ) -> AsyncIterator[LockedTurn]:
        """Hold the conversation's lock for one answer; the history includes `user` last.

        `persona` names a channel whose persona is read in the same round trip that takes
        the lock; commands queued with `LockedTurn.defer` go out in the same round trip
        that releases it.

        With Redis unreachable the turn goes on without it (`LockedTurn.stored` is
        False): no lock across replicas, the history is `user` alone (the engine
        rebuilds the rest from the platform), and the turn is kept in memory until the
        conversation can store it. Storing the answer never fails the turn.
        """
        token = secrets.token_hex(8)
        locked = await self.state.call(
            "history", lambda: self._begin(conversation, token, user, persona), otherwise=None
        )
        if locked is None:
            locked = LockedTurn([user], {}, stored=False)
            try:
                yield locked
            finally:
                self.unsaved.keep(conversation, [user], locked.deferred)
                if locked.answer is not None:
                    self.unsaved.keep(conversation, [locked.answer])
            return
        renewer = asyncio.create_task(self._keep_alive(conversation, token))
        try:
            yield locked
        finally:
            renewer.cancel()
            # Shielded: a cancelled answer must still release its lock and keep its text.
            await asyncio.shield(self._release(conversation, token, locked))

    async def _begin(
        self, conversation: ConversationKey, token: str, user: HistoryEntry, persona: ChannelScope | None,
    ) -> LockedTurn:
        pending, ops = self.unsaved.take(conversation)
        delay = 0.02
        deadline = time.monotonic() + LOCK_WAIT_LIMIT
        while True:
            try:
                start = await self._store.start_turn(
                    conversation, token, encode(user), self._bounds,
                    pending=[encode(e) for e in pending], ops=ops, persona=persona,
                )
            except StoreError:
                self.unsaved.keep(conversation, pending, ops)
                raise
            pending, ops = [], []
            if start.history is not None:
                return LockedTurn([e for e in map(decode, start.history) if e is not None], start.persona)
            if time.monotonic() > deadline:
                raise ConversationBusy(str(conversation))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _release(self, conversation: ConversationKey, token: str, locked: LockedTurn) -> None:
        answer = encode(locked.answer) if locked.answer else ""
        try:
            await self._store.finish_turn(conversation, token, answer, self._bounds, locked.deferred)
        except StoreError as exc:
            # The answer is on screen already: keep it for later, never fail the turn for it.
            # The lock expires by itself within LOCK_MS (bot.state.redis_store); the next turn
            # here releases it sooner, in the round trip that starts it (it may have outlived a
            # failover on the replica that took over).
            self.state.failed("store", exc)
            metrics.after_answer_failure("store")
            log.warning("could not store the answer in %s (kept in memory): %s", conversation, exc)
            later = [*locked.deferred, self._store.unlock(conversation, token)]
            self.unsaved.keep(conversation, [locked.answer] if locked.answer else [], later)

    async def _keep_alive(self, conversation: ConversationKey, token: str) -> None:
        while True:
            await asyncio.sleep(LOCK_RENEW_EVERY)
            try:
                if not await self._store.renew_lock(conversation, token):
                    # Released, or expired and taken since: nothing to keep. (This also ends
                    # the loop when redis-py swallowed the cancellation the turn's end sent.)
                    return
            except StoreError as exc:
                # The answer goes on; if Redis is gone for good the lock simply expires.
                log.info("could not renew a conversation lock: %s", exc)

    async def prepend(self, conversation: ConversationKey, earlier: Sequence[HistoryEntry]) -> None:
        """Put messages rebuilt from the platform before what the store has."""
        if earlier:
            await self._store.prepend(conversation, [encode(e) for e in earlier], self._bounds)

    async def note(self, conversation: ConversationKey, entry: HistoryEntry) -> bool:
        """Add a message as context only, if the conversation is one the store keeps."""
        return await self._store.note(conversation, encode(entry), self._bounds)

    async def exists(self, conversation: ConversationKey) -> bool:
        return await self._store.exists(conversation)

    async def load(self, conversation: ConversationKey) -> list[HistoryEntry]:
        return [e for e in map(decode, await self._store.load(conversation)) if e is not None]

    async def revise(
        self, conversation: ConversationKey, message_id: str, content: str, *, rewind: bool
    ) -> list[HistoryEntry] | None:
        """A person edited a message: see `ConversationState.revise`; the rewound entries decoded."""
        dropped = await self._store.revise(conversation, message_id, content, rewind)
        if dropped is None:
            return None
        return [e for e in map(decode, dropped) if e is not None]

    async def remove(self, conversation: ConversationKey, message_id: str) -> bool:
        return await self._store.remove(conversation, message_id)

    async def forget(self, conversation: ConversationKey) -> bool:
        """Clear the history, leaving a marker so it is not rebuilt from the platform."""
        marker = encode(HistoryEntry(role=FORGOTTEN, content="", ts=time.time()))
        before = await self._store.forget(conversation, marker, self._bounds)
        return any(json.loads(raw).get("role") != FORGOTTEN for raw in before)


Deferral = Callable[[Queued], None]


class LockedTurn:
    """What one locked turn sees (the history) and leaves behind (the answer)."""

    def __init__(
        self, history: list[HistoryEntry], persona: dict[str, str], *, stored: bool = True
    ) -> None:
        self.history = history
        self.persona = persona  # the persona hash read with the lock, when asked for
        self.stored = stored  # False: Redis was unreachable; nothing held or read there
        self.answer: HistoryEntry | None = None
        self.deferred: list[Queued] = []

    def defer(self, queue: Queued) -> None:
        """Have `queue(pipeline)` add commands to the round trip that releases the lock."""
        self.deferred.append(queue)
