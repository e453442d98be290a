"""ReplyStream: turn a stream of text into a few platform writes.

The model may send hundreds of deltas a second; a platform takes about one
edit a second. The stream keeps the whole text so far and a writer task
shows it:

- the first text is posted the moment it arrives;
- after that, progress edits go out no more often than the surface's
  `min_edit_interval`, and only when the shared rate windows have a spare
  slot (see `bot.pacing`), each carrying everything received so far;
- the final text is written the moment the stream ends, first in line for
  the windows, and retried until it lands;
- text past the surface's `max_chars` continues in new messages
  (`bot.splitting`), finished messages never left with an open code fence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bot.pacing import FINAL, POST, RateWindow, acquire_all, try_take_progress
from bot.splitting import split_message
from bot.surface import FinishingSurface, ReplySurface, SurfaceRateLimited

log = logging.getLogger(__name__)

T = TypeVar("T")

THINKING = "is thinking…"
# Show the status only when the first text is slow to come: a quick answer needs no
# indicator, and a burst of answers should not spend platform calls on one.
THINKING_DELAY = 0.3
FINAL_WRITE_ATTEMPTS = 8
EMPTY_ANSWER = "_(The model returned an empty answer.)_"

_background: set[asyncio.Task[None]] = set()  # status clears left to finish on their own


class ReplyStream:
    def __init__(self, surface: ReplySurface) -> None:
        self.surface = surface
        self.limits = surface.limits
        self.text = ""
        self.message_ids: list[str] = []
        self.first_visible_at: float | None = None  # monotonic times, for logs and benchmarks
        self.final_at: float | None = None
        self._shown: list[str] = []
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._last_write = 0.0
        self._writer: asyncio.Task[None] | None = None
        self._thinking: asyncio.Task[None] | None = None
        self._status_shown = False
        self._reserved: tuple[RateWindow, ...] = ()

    @property
    def has_text(self) -> bool:
        return bool(self.text.strip())

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> ReplyStream:
        self._reserved = self.limits.edit_windows
        for window in self._reserved:
            window.reserved += 1
        # The status is cosmetic: never let it delay the model request.
        self._thinking = asyncio.create_task(self._think())
        self._writer = asyncio.create_task(self._write_progress())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer and not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self._stop_thinking()
        for window in self._reserved:
            window.reserved -= 1
        self._reserved = ()

    def add(self, text: str) -> None:
        if text:
            self.text += text
            self._changed.set()

    async def finish(self, note: str = "") -> None:
        """The stream ended: land the final text (with `note` appended, if any)."""
        await self._stop_writer()
        final = self.text.strip() or EMPTY_ANSWER
        if note:
            final = f"{final}\n\n{note}"
        await self._write_final(final)

    async def fail(self, message: str) -> None:
        """Nothing useful was shown and nothing will be: say what went wrong instead."""
        await self._stop_writer()
        await self._write_final(message)

    async def _stop_writer(self) -> None:
        self._closing.set()
        if self._writer:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    # -- writing -------------------------------------------------------------

    async def _think(self) -> None:
        await asyncio.sleep(THINKING_DELAY)
        self._status_shown = True
        await self._set_status(THINKING)

    async def _set_status(self, status: str | None) -> None:
        try:
            await self.surface.set_status(status)
        except Exception as exc:  # cosmetic; an answer must not fail for it
            log.debug("status update failed: %s", exc)

    async def _wait_closing(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if the stream ended meanwhile."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)
        return self._closing.is_set()

    async def _write_progress(self) -> None:
        changed = asyncio.create_task(self._changed.wait())
        closing = asyncio.create_task(self._closing.wait())
        try:
            while not self._closing.is_set():
                await asyncio.wait({changed, closing}, return_when=asyncio.FIRST_COMPLETED)
                if self._closing.is_set():
                    return
                if not self.message_ids:
                    self._changed.clear()
                    changed = asyncio.create_task(self._changed.wait())
                    await self._show(split_message(self.text, self.limits.max_chars), POST)
                    continue
                wait = self._last_write + self.limits.min_edit_interval - time.monotonic()
                if await self._wait_closing(wait):
                    return
                if not try_take_progress(self.limits.edit_windows):
                    # No spare slot: look again shortly, unless the stream ends first.
                    if await self._wait_closing(min(0.25, self.limits.min_edit_interval)):
                        return
                    continue
                self._changed.clear()
                changed = asyncio.create_task(self._changed.wait())
                await self._show(split_message(self.text, self.limits.max_chars), POST, slot_taken=True)
        finally:
            changed.cancel()
            closing.cancel()

    async def _show(self, parts: list[str], priority: int, slot_taken: bool = False) -> None:
        """One progress pass: write each message whose text changed; never raises."""
        try:
            await self._write_parts(parts, priority, attempts=1, slot_taken=slot_taken)
        except Exception as exc:
            log.info("progress write skipped: %s", exc)

    async def _write_final(self, text: str) -> None:
        parts = split_message(text, self.limits.max_chars)
        self._stop_thinking()
        await self._write_parts(parts, FINAL, attempts=FINAL_WRITE_ATTEMPTS)
        self.final_at = time.monotonic()
        if isinstance(self.surface, FinishingSurface):
            try:
                await self.surface.finish()
            except Exception as exc:
                log.warning("could not finish the reply: %s", exc)

    def _stop_thinking(self) -> None:
        """A "thinking" status that lands after the answer would show again: drop it."""
        if self._thinking and not self._thinking.done():
            self._thinking.cancel()

    async def _write_parts(
        self, parts: list[str], priority: int, attempts: int, slot_taken: bool = False
    ) -> None:
        for index, part in enumerate(parts):
            if index < len(self.message_ids):
                if self._shown[index] == part:
                    continue
                message_id = self.message_ids[index]

                async def edit(message_id: str = message_id, part: str = part) -> None:
                    await self.surface.edit(message_id, part)

                windows = self.limits.edit_windows
                await self._write(edit, windows, priority, attempts, acquire=not slot_taken)
                slot_taken = False
                self._shown[index] = part
            else:

                async def post(part: str = part) -> str:
                    return await self.surface.post(part)

                new_id = await self._write(post, self.limits.post_windows, priority, attempts)
                self.message_ids.append(new_id)
                self._shown.append(part)
                if self.first_visible_at is None:
                    self.first_visible_at = time.monotonic()
                    self._stop_thinking()
                    if self._status_shown:
                        # Never cancelled: a clear cut short would leave the status up.
                        clear = asyncio.create_task(self._set_status(None))
                        _background.add(clear)
                        clear.add_done_callback(_background.discard)

    async def _write(
        self,
        write: Callable[[], Awaitable[T]],
        windows: tuple[RateWindow, ...],
        priority: int,
        attempts: int,
        acquire: bool = True,
    ) -> T:
        delay = 0.5
        for attempt in range(1, attempts + 1):
            if acquire or attempt > 1:
                await acquire_all(windows, priority)
            try:
                result = await write()
            except SurfaceRateLimited as limited:
                # A 429 slows everyone in scope down; the write itself is never dropped.
                for window in windows:
                    window.back_off(limited.retry_after)
                if attempt == attempts:
                    raise
                if not windows:
                    await asyncio.sleep(limited.retry_after)
                continue
            except Exception as exc:
                if attempt == attempts:
                    raise
                log.warning("platform write failed (attempt %d): %s", attempt, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 8.0)
                continue
            self._last_write = time.monotonic()
            return result
        raise AssertionError("unreachable")

    def set_status_text(self, text: str) -> None:
        """Replace the status shown while no answer text is visible yet (cosmetic, never blocks)."""
        if self.first_visible_at is not None or self.final_at is not None:
            return
        if self._thinking is not None and not self._thinking.done():
            self._thinking.cancel()  # this text replaces the default one
        elif self._status_shown and text == getattr(self, "_status_text", THINKING):
            return  # already showing
        self._status_text = text
        self._status_shown = True  # so the first text clears it
        task = asyncio.create_task(self._set_status(text))  # `_set_status` swallows errors
        _background.add(task)
        task.add_done_callback(_background.discard)
