"""Answering again in place: a surface over an earlier answer's messages.

When a person edits the question the bot answered last (or is answering now), the new
answer takes the old one's place (docs/architecture.md, "Edits and deletes"): the first
messages it would post are edits of the old answer's messages, and old messages the new
answer does not need are deleted when it is finished. So the thread never shows an
answer to words that are no longer there.

Its posts are edits, so they draw on the edit windows as well as the post windows
(`SurfaceLimits`): the pacing stays on the safe side.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from bot.contract import Controls, FinishingSurface, ReplySurface, SurfaceLimits

log = logging.getLogger(__name__)


class InPlaceSurface:
    def __init__(self, inner: ReplySurface, message_ids: list[str]) -> None:
        self.inner = inner
        self._free = list(message_ids)  # the old answer's messages not reused yet
        limits = inner.limits
        both = tuple(dict.fromkeys(limits.post_windows + limits.edit_windows))
        self._limits = replace(limits, post_windows=both)

    @property
    def limits(self) -> SurfaceLimits:
        return self._limits

    async def post(self, text: str, *, complete: bool = False, controls: Controls | None = None) -> str:
        if not self._free:
            return await self.inner.post(text, complete=complete, controls=controls)
        message_id = self._free[0]
        await self.inner.edit(message_id, text, controls=controls)
        self._free.pop(0)
        return message_id

    async def edit(self, message_id: str, text: str, *, controls: Controls | None = None) -> None:
        await self.inner.edit(message_id, text, controls=controls)

    async def delete(self, message_id: str) -> None:
        await self.inner.delete(message_id)

    async def set_status(self, status: str | None) -> None:
        await self.inner.set_status(status)

    async def finish(self, *, affordable: bool = True) -> None:
        """The new answer is complete: the old messages it did not need go."""
        stale, self._free = self._free, []
        for message_id in stale:
            try:
                await self.inner.delete(message_id)
            except Exception as exc:
                log.warning("could not delete an earlier answer's message: %s", exc)
        if isinstance(self.inner, FinishingSurface):
            await self.inner.finish(affordable=affordable)
