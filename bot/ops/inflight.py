"""Answers in flight, recorded in Redis while they stream, so a crash leaves no half-written message.

Each process is an *owner*: a random id with a heartbeat key that lives
`owner_ttl` seconds after its last refresh. While an answer streams, its
record (platform, conversation, platform message ids, the text so far) sits in
the owner's hash. When the answer's final text lands, the record goes.

If the process dies (kill -9, OOM, a lost node), its heartbeat expires and the
records stay. Any process of the bot with the same platform (the restarted one,
or another replica) finds them in its sweep and edits each orphaned message to
the text so far plus "restarted mid-answer — ask again".

Keys:

    {prefix}:owners            set of owner ids that may have records
    {prefix}:owner:{id}        the heartbeat ("1", with a TTL)
    {prefix}:inflight:{id}     hash: answer id -> JSON record

Cost: nothing on an answer's path. Records are written by the upkeep's one
pipeline a second (`bot.ops.upkeep`), only for answers with a visible message whose
text changed; an answer over before the next tick is never written. One
answer that was written costs one HDEL when it ends.

To edit a message after a restart the core needs a surface for it: each
adapter offers `surface_for(conversation, message_id)` (`bot.contract.Adapter`),
registered under its platform name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from bot.contract import ConversationKey, ReplySurface, SurfaceRateLimited
from bot.conversations.history import Deferral
from bot.delivery.reply import ReplyStream
from bot.delivery.splitting import split_message
from bot.ops import metrics
from bot.state.interface import Client, InFlightState, Pipeline, StoreError
from bot.state.redis_store import as_store

log = logging.getLogger(__name__)

OWNER_TTL = 15.0  # a dead process's answers are marked this long after its last heartbeat
RECORD_TTL = 7 * 86400  # records nobody could mark (no process has their platform) are dropped
RESTARTED_NOTE = "_(Interrupted: the bot restarted mid-answer — ask again.)_"
MARK_ATTEMPTS = 4

# An adapter's way to reach a message it posted before a restart:
#     async def surface_for(conversation, message_id) -> ReplySurface | None
# The surface must be able to `edit` that message id (and `post` in the
# conversation, used only when the note pushes the text over the limit).
SurfaceFor = Callable[[ConversationKey, str], Awaitable[ReplySurface | None]]


@dataclass(frozen=True)
class Record:
    """What is kept of one answer in flight."""

    conversation: ConversationKey
    message_ids: tuple[str, ...]
    text: str
    started: float

    def encode(self) -> str:
        c = self.conversation
        return json.dumps(
            {
                "platform": c.platform, "workspace": c.workspace, "channel": c.channel,
                "thread": c.thread, "message_ids": list(self.message_ids), "text": self.text,
                "started": self.started,
            },
            ensure_ascii=False,
        )

    @classmethod
    def decode(cls, raw: str) -> Record | None:
        try:
            d = json.loads(raw)
            conversation = ConversationKey(
                str(d["platform"]), str(d["workspace"]), str(d["channel"]), str(d["thread"])
            )
            return cls(conversation, tuple(map(str, d["message_ids"])), str(d["text"]), float(d["started"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class _Live:
    conversation: ConversationKey
    reply: ReplyStream
    started: float
    written: tuple[int, int] | None = None  # (text length, message count) last written


def new_owner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class InFlight:
    def __init__(
        self, store: InFlightState | Client, prefix: str, *, owner: str | None = None,
        owner_ttl: float | None = None,
    ) -> None:
        self._store: InFlightState = as_store(store, prefix)
        self._keys = self._store.keys
        self.owner = owner or new_owner_id()
        self.owner_ttl = OWNER_TTL if owner_ttl is None else owner_ttl
        self.active = False  # True while an upkeep writes records and heartbeats
        self.lock = asyncio.Lock()  # a record is never written and deleted at once
        self._live: dict[str, _Live] = {}
        self._sources: dict[str, SurfaceFor] = {}

    # ---- keys ---------------------------------------------------------------------

    @property
    def owners_key(self) -> str:
        return self._keys.owners

    def heartbeat_key(self, owner: str) -> str:
        return self._keys.heartbeat(owner)

    def records_key(self, owner: str) -> str:
        return self._keys.inflight(owner)

    # ---- the engine's side ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def track(
        self, conversation: ConversationKey, reply: ReplyStream, defer: Deferral
    ) -> AsyncIterator[None]:
        """Keep `reply` on record while the block runs; drop the record once its final text landed.

        The drop goes out with the turn's last round trip (`defer`), not one of its own.
        """
        answer_id = reply.id  # the answer's one id, as Stop and feedback know it
        self._live[answer_id] = _Live(conversation, reply, time.time())
        try:
            yield
        finally:
            # Shielded: a cancelled answer must still settle its record.
            await asyncio.shield(self._settle(answer_id, reply.final_at is not None, defer))

    async def _settle(self, answer_id: str, landed: bool, defer: Deferral) -> None:
        # Under the lock: once the record leaves `_live`, no upkeep tick writes it again.
        async with self.lock:
            live = self._live.pop(answer_id)
            if not self.active:
                return
            try:
                if landed and live.written is not None:
                    key = self.records_key(self.owner)
                    defer(lambda pipe: pipe.hdel(key, answer_id))
                elif not landed and live.reply.message_ids:
                    # The final text never landed: keep the record so that it is marked
                    # once this process is gone.
                    await self._write({answer_id: self._record(live)})
            except StoreError as exc:
                metrics.redis_error("inflight")
                log.warning("could not settle the in-flight record of %s: %s", live.conversation, exc)

    @property
    def live(self) -> int:
        return len(self._live)

    # ---- the upkeep's side ------------------------------------------------------------

    def queue(self, pipe: Pipeline, heartbeat: bool) -> Callable[[], None]:
        """Add changed records (and the heartbeat) to `pipe`; call the result once it ran.

        The caller holds `self.lock` from here until the commit.
        """
        changed: dict[str, tuple[_Live, tuple[int, int], str]] = {}
        for answer_id, live in self._live.items():
            ids = live.reply.message_ids
            if not ids:
                continue  # nothing visible yet: nothing to fix after a crash
            state = (len(live.reply.text), len(ids))
            if state != live.written:
                changed[answer_id] = (live, state, self._record(live).encode())
        if changed:
            pipe.hset(self.records_key(self.owner), mapping={k: v[2] for k, v in changed.items()})
            pipe.expire(self.records_key(self.owner), RECORD_TTL)
            pipe.sadd(self.owners_key, self.owner)
        if changed or heartbeat:
            pipe.set(self.heartbeat_key(self.owner), "1", px=int(self.owner_ttl * 1000))

        def commit() -> None:
            for live, state, _ in changed.values():
                live.written = state

        return commit

    def _record(self, live: _Live) -> Record:
        return Record(live.conversation, tuple(live.reply.message_ids), live.reply.text, live.started)

    async def _write(self, records: dict[str, Record]) -> None:
        def queue(pipe: Pipeline) -> None:
            pipe.hset(self.records_key(self.owner), mapping={k: r.encode() for k, r in records.items()})
            pipe.expire(self.records_key(self.owner), RECORD_TTL)
            pipe.sadd(self.owners_key, self.owner)

        await self._store.send(queue)

    async def close(self) -> None:
        """A clean exit: the heartbeat goes at once, so anything left is marked by the next sweep."""
        await self._store.close_owner(self.owner)

    # ---- recovery ---------------------------------------------------------------------

    def register(self, platform: str, surface_for: SurfaceFor) -> None:
        """Let the sweep mark orphaned answers on `platform` through `surface_for`."""
        self._sources[platform] = surface_for

    async def sweep(self) -> int:
        """Mark the answers of every dead owner on the platforms registered here; returns how many."""
        owners = sorted(o for o in await self._store.owners() if o != self.owner)
        if not owners:
            return 0
        alive = await self._store.alive(owners)
        marked = 0
        for owner, is_alive in zip(owners, alive, strict=True):
            if not is_alive:
                marked += await self._recover(owner)
        return marked

    async def _recover(self, owner: str) -> int:
        raw = await self._store.records(owner)
        if not raw:
            await self._store.drop_owner(owner)
            return 0
        marked, left = 0, 0
        for answer_id, value in raw.items():
            record = Record.decode(value)
            if record is None:
                await self._store.take_record(owner, answer_id)
                continue
            source = self._sources.get(record.conversation.platform)
            if source is None:
                left += 1  # a process with that platform will take it
                continue
            # Taken by exactly one process: two replicas never mark it twice.
            if await self._store.take_record(owner, answer_id):
                marked += await self._mark(record, source)
        if not left:
            await self._store.drop_owner(owner)
        return marked

    async def _mark(self, record: Record, surface_for: SurfaceFor) -> int:
        conversation = record.conversation
        try:
            surface = await surface_for(conversation, record.message_ids[0])
            if surface is None:
                log.info("no way to reach the orphaned answer in %s any more", conversation)
                return 0
            await _rewrite(surface, record)
        except Exception as exc:
            log.error("could not mark the orphaned answer in %s: %s", conversation, exc)
            return 0
        log.warning("marked an answer cut by a restart in %s (%d messages)", conversation,
                    len(record.message_ids))
        metrics.orphan_marked(conversation.platform)
        return 1


async def _rewrite(surface: ReplySurface, record: Record) -> None:
    """The text so far plus the note, over the messages the answer had."""
    body = record.text.strip()
    text = f"{body}\n\n{RESTARTED_NOTE}" if body else RESTARTED_NOTE
    parts = split_message(text, surface.limits.max_chars)
    for index, part in enumerate(parts):
        if index < len(record.message_ids):
            message_id = record.message_ids[index]
            await _retrying(partial(surface.edit, message_id, part))
        else:
            await _retrying(partial(surface.post, part))
    # An answer shown in parts (bot.delivery.pacing, rule 5) had more messages than its text needs
    # now: their words are in the messages above, so they go.
    for message_id in record.message_ids[len(parts) :]:
        await _retrying(partial(surface.delete, message_id))


async def _retrying(write: Callable[[], Awaitable[Any]]) -> None:
    for attempt in range(1, MARK_ATTEMPTS + 1):
        try:
            await write()
            return
        except SurfaceRateLimited as limited:
            if attempt == MARK_ATTEMPTS:
                raise
            await asyncio.sleep(limited.retry_after)
