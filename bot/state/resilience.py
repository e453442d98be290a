"""Redis as a working copy, not a single point of failure.

Slack threads and Discord chains are the source of truth; Redis keeps a working copy
(histories, personas) and the coordination between replicas (dedup, locks). When it is
unreachable the engine answers anyway:

- history is rebuilt from the platform (the usual backfill);
- the channel's persona comes from `PersonaCache` (what this process read in the last
  `PERSONA_CACHE_SECONDS`), else the default, and the log says so once;
- dedup is this process's own memory (`LocalSeen`) and there is no cross-replica lock:
  a retry of the same event delivered to another replica meanwhile may be answered
  twice; nothing is ever left unanswered;
- what could not be stored is kept in memory (`Unsaved`) and written when the
  conversation next takes its lock with Redis back.

Whether Redis is worth a call right now is `bot.state.breaker.RedisState`'s to say.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from bot.contract import ChannelScope, ConversationKey, HistoryEntry
from bot.state.interface import Queued

log = logging.getLogger(__name__)

PERSONA_CACHE_SECONDS = 600.0
MAX_REMEMBERED = 10_000  # events, personas and unsaved conversations kept in memory, each


class LocalSeen:
    """Event keys this process has claimed, for dedup when Redis cannot say."""

    def __init__(self, ttl: float, limit: int = MAX_REMEMBERED) -> None:
        self.ttl = ttl
        self.limit = limit
        self._seen: OrderedDict[str, float] = OrderedDict()

    def claim(self, key: str) -> bool:
        now = time.monotonic()
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)
        if key in self._seen:
            return False
        self._seen[key] = now + self.ttl
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return True


@dataclass(frozen=True)
class _Cached:
    raw: dict[str, str]
    at: float


class PersonaCache:
    """The persona hashes this process read lately, by channel scope."""

    def __init__(self, max_age: float = PERSONA_CACHE_SECONDS, limit: int = MAX_REMEMBERED) -> None:
        self.max_age = max_age
        self.limit = limit
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._said_default: set[str] = set()

    def remember(self, scope: ChannelScope, raw: dict[str, str]) -> None:
        key = str(scope)
        self._cache[key] = _Cached(dict(raw), time.monotonic())
        self._cache.move_to_end(key)
        self._said_default.discard(key)
        if len(self._cache) > self.limit:
            self._cache.popitem(last=False)

    def recall(self, scope: ChannelScope) -> dict[str, str]:
        """The cached hash, or {} (the default persona), said once per channel in the log."""
        key = str(scope)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached.at <= self.max_age:
            return cached.raw
        if key not in self._said_default:
            self._said_default.add(key)
            log.warning("Redis is unreachable and %s's persona is not cached: using the default", key)
        return {}


Queue = Queued  # adds commands to a pipeline (see `LockedTurn.defer`)


class Unsaved:
    """What a turn could not store (history entries, deferred clean-ups), by conversation,
    kept until the conversation next reaches Redis."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self.limit = limit
        self._pending: OrderedDict[ConversationKey, tuple[list[HistoryEntry], list[Queue]]] = OrderedDict()

    def keep(
        self, conversation: ConversationKey, entries: Sequence[HistoryEntry], ops: Sequence[Queue] = ()
    ) -> None:
        if not entries and not ops:
            return
        kept, queued = self._pending.setdefault(conversation, ([], []))
        kept.extend(entries)
        queued.extend(ops)
        self._pending.move_to_end(conversation)
        if len(self._pending) > self.limit:
            self._pending.popitem(last=False)

    def take(self, conversation: ConversationKey) -> tuple[list[HistoryEntry], list[Queue]]:
        return self._pending.pop(conversation, ([], []))

    def entries(self, conversation: ConversationKey) -> list[HistoryEntry]:
        return list(self._pending.get(conversation, ([], []))[0])
