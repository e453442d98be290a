"""Slash command interactions in the fake Discord: what was asked, what was answered."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.discord_payloads import JSON

EPHEMERAL = 1 << 6

# Interaction callback types.
CHANNEL_MESSAGE = 4
DEFERRED_CHANNEL_MESSAGE = 5
AUTOCOMPLETE_RESULT = 8
DEFERRED_UPDATE_MESSAGE = 6
MODAL = 9

# Discord refuses the first response after this long ("Unknown interaction").
RESPONSE_WINDOW = 3.0


@dataclass
class Interaction:
    """One INTERACTION_CREATE the fake sent, and every answer it got."""

    id: str
    token: str
    payload: JSON
    sent_at: float  # on the fake's clock, like the callbacks it is measured against
    callbacks: list[JSON] = field(default_factory=list)
    callback_at: float | None = None
    original: JSON | None = None  # the response message (callback type 4 or @original edit)
    followups: list[JSON] = field(default_factory=list)
    late: bool = False  # the first callback came after Discord's 3 s window
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def deferred(self) -> bool:
        return any(c.get("type") == DEFERRED_CHANNEL_MESSAGE for c in self.callbacks)

    @property
    def choices(self) -> list[dict[str, Any]] | None:
        """Autocomplete choices, once answered."""
        for callback in self.callbacks:
            if callback.get("type") == AUTOCOMPLETE_RESULT:
                return list(callback.get("data", {}).get("choices", []))
        return None

    @property
    def messages(self) -> list[JSON]:
        """Visible answers: the original response (unless still 'thinking'), then follow-ups."""
        shown = [self.original] if self.original and self.original.get("content") else []
        return shown + self.followups

    @property
    def text(self) -> str:
        return "\n".join(str(m.get("content") or "") for m in self.messages)

    @property
    def ephemeral(self) -> bool:
        """Every visible answer was ephemeral (only the invoking user saw it)."""
        return bool(self.messages) and all(int(m.get("flags") or 0) & EPHEMERAL for m in self.messages)

    async def answered(self, within: float = 5.0) -> str:
        """Wait until a visible answer (or autocomplete choices) exists; return its text."""
        async with asyncio.timeout(within):
            while not self.messages and self.choices is None:
                self.changed.clear()
                await self.changed.wait()
        return self.text

    def _touch(self) -> None:
        self.changed.set()
