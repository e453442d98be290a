"""The answers whose model stream this process is reading, and how they end early.

A Stop press (`Core.stop`) or an edit of the question being answered sets an answer's
`stop` event; the engine reads the model with `bot.delivery.tasks.unless_stopped`, which cancels the stream
(and so the tokens paid for) the moment that happens. Presses for an answer another
replica streams travel through `bot.delivery.stops`; that replica decides with `decide`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bot.contract import AdminCheck, Author, ConversationKey, Pressed
from bot.delivery.stops import StopRequest
from bot.ops import metrics
from bot.ops.outcome import Outcome


@dataclass
class LiveAnswer:
    """An answer whose model stream is being read: what a Stop press (or an edit of its
    question) needs."""

    asker: Author
    outcome: Outcome
    conversation: ConversationKey
    question: str  # the platform id of the message it answers
    task: asyncio.Task[Any] | None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    superseded: bool = False  # stopped because its question was edited: answered again in place


async def admits(can_admin: AdminCheck) -> bool:
    return can_admin if isinstance(can_admin, bool) else await can_admin()


class LiveAnswers:
    """This process's live answers, by answer id."""

    def __init__(self) -> None:
        self._by_id: dict[str, LiveAnswer] = {}

    @contextlib.contextmanager
    def reading(self, answer_id: str, live: LiveAnswer) -> Iterator[LiveAnswer]:
        """`live` is on record while the model stream is read; a press after that finds the
        answer finished."""
        self._by_id[answer_id] = live
        try:
            yield live
        finally:
            self._by_id.pop(answer_id, None)

    def answering(self, conversation: ConversationKey, question: str) -> LiveAnswer | None:
        """The live answer to message `question` of `conversation`, if any."""
        return next(
            (a for a in self._by_id.values() if a.conversation == conversation and a.question == question),
            None,
        )

    async def stop(self, answer_id: str, actor: Author, can_admin: AdminCheck) -> Pressed | None:
        """Stop an answer streaming here (the asker, or an admin); None: not streaming here."""
        live = self._by_id.get(answer_id)
        if live is None:
            return None
        return self._press(live, actor.id, actor.id == live.asker.id or await admits(can_admin))

    async def decide(self, request: StopRequest) -> Pressed | None:
        """A press published by another replica (bot.delivery.stops): decided here if it streams here."""
        live = self._by_id.get(request.answer_id)
        if live is None:
            return None
        return self._press(live, request.actor_id, request.admin)

    @staticmethod
    def _press(live: LiveAnswer, actor_id: str, allowed: bool) -> Pressed:
        if actor_id != live.asker.id and not allowed:
            metrics.stop_pressed(live.outcome.platform, "refused")
            return Pressed(False, f"Only {live.asker.name} (who asked) or an admin can stop this answer.")
        if not live.stop.is_set():
            live.outcome.stop_pressed_at = time.monotonic()
            live.stop.set()
            metrics.stop_pressed(live.outcome.platform, "stopped")
        return Pressed(True)
