"""Edits of one message converge on its latest text: coalesced, versioned, the last write wins.

A person may edit a question many times while it is answered, and a platform may deliver
the edits at once and out of order. Each edited message gets one worker here, which
handles its edits one after another:

- **versioned**: an edit carries the platform's time of it (`Turn.edited_at`); one older
  than the newest seen for that message is dropped, whenever it arrives;
- **coalesced**: the worker waits `window` seconds (of the bot's clock) and takes only the
  newest edit that arrived meanwhile;
- **last write wins**: an edit that arrives while an answer to an older version streams
  stops that answer at once (`interrupt`), and the worker answers the newest version
  again in place once that one has ended (`apply`).

So however fast the edits come, one answer remains, to the latest text, and the history
(rewound by each re-answer) holds that text once. One process's view: edits of one
message spread over several replicas are each handled where they land.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from bot.clock import Clock
from bot.contract import ConversationKey, Turn
from bot.lru import Lru

WINDOW = 0.3  # seconds: edits closer together than this are one edit
REMEMBERED = 10_000  # messages whose newest edit version is kept, to drop late older ones

Key = tuple[ConversationKey, str]
Apply = Callable[[Turn], Awaitable["asyncio.Task[Any] | None"]]


class Edits:
    def __init__(
        self, clock: Clock, apply: Apply, interrupt: Callable[[Turn], None], window: float = WINDOW
    ) -> None:
        self.clock = clock
        self.window = window
        self._apply = apply  # answers the message's text again; the answer's task, or None
        self._interrupt = interrupt  # stops an answer to an older version of the message
        self._latest: dict[Key, Turn] = {}  # the newest edit not yet applied, per message
        self._newest: Lru[Key, float] = Lru(REMEMBERED)  # the newest version seen, per message
        self._workers: dict[Key, asyncio.Task[None]] = {}

    @property
    def busy(self) -> int:
        """Messages whose edits are being handled."""
        return len(self._workers)

    @property
    def workers(self) -> set[asyncio.Task[None]]:
        """The workers now (a shutdown waits for them as for answers: their edits were claimed)."""
        return set(self._workers.values())

    def arrived(self, turn: Turn) -> bool:
        """Take an edit; False for one older than an edit already seen (dropped)."""
        key = (turn.conversation, turn.message_id)
        newest = self._newest.get(key)
        if turn.edited_at and newest is not None and turn.edited_at < newest:
            return False
        if turn.edited_at:
            self._newest[key] = turn.edited_at
        self._latest[key] = turn
        self._interrupt(turn)
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._work(key), name=f"edits of {turn.message_id}")
        return True

    async def _work(self, key: Key) -> None:
        try:
            while True:
                await self.clock.sleep(self.window)  # the edits arriving meanwhile are one
                turn = self._latest.pop(key, None)
                if turn is None:
                    return
                answer = await self._apply(turn)
                if answer is not None:
                    await asyncio.wait({answer})  # stopped early if a newer edit arrives
        finally:
            self._workers.pop(key, None)
