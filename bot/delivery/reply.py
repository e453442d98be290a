"""ReplyStream: turn a stream of text into a few platform writes.

The model may send hundreds of deltas a second; a platform takes about one
edit a second, from a budget shared with every other live answer in scope
(`bot.delivery.pacing`). The stream keeps the whole text so far and a writer task
shows it:

- the first text is posted the moment it arrives, *if* the final edit of that
  message could be reserved in the shared budget; if not, the status stays up
  and the whole text is posted in one new message when the stream ends, so no
  message is ever left half-written;
- after that, progress edits go out when the budget has a spare slot, spaced by
  the pacer's `spacing` (about one a second alone, fewer when many answers are
  live), each carrying everything received so far;
- the final text is written the moment the stream ends with the reserved slot;
  if the platform refuses it anyway (a 429 with a long Retry-After), the text is
  posted anew and the partial message deleted;
- text past the surface's `max_chars` continues in new messages
  (`bot.delivery.splitting`), each reserving its own final, finished messages never left
  with an open code fence;
- on a surface that shows controls (`SurfaceLimits.controls`), the message being
  written carries a Stop button, and the final edit replaces it (with the feedback
  buttons, for an answer); no other message carries any.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bot.contract import Controls, FinishingSurface, ReplySurface, SurfaceRateLimited
from bot.delivery.pacing import FINAL, FINAL_WAIT_MAX, POST, Grant, Pacer, Window
from bot.delivery.splitting import split_message
from bot.delivery.tasks import Stopped, unless_stopped
from bot.ops import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

THINKING = "is thinking…"
# Show the status only when the first text is slow to come: a quick answer needs no
# indicator, and a burst of answers should not spend platform calls on one.
THINKING_DELAY = 0.3
FINAL_WRITE_ATTEMPTS = 8
EMPTY_ANSWER = "_(The model returned an empty answer.)_"

_background: set[asyncio.Task[None]] = set()  # status clears left to finish on their own

_local_pacer: Pacer | None = None


class _StreamEnded(Exception):
    """The stream ended while a progress write waited for a slot: the final takes over."""


class _NoSlot(Exception):
    """A final edit would wait longer than a final may: it takes another way."""


def local_pacer() -> Pacer:
    """Windows for this process alone, for streams built without the engine's pacer."""
    global _local_pacer
    if _local_pacer is None:
        _local_pacer = Pacer.local()
    return _local_pacer


class ReplyStream:
    def __init__(self, surface: ReplySurface, pacer: Pacer | None = None, *, answer_id: str = "") -> None:
        self.surface = surface
        self.limits = surface.limits
        self.pacer = pacer or local_pacer()
        self.id = answer_id or secrets.token_hex(6)
        # The buttons of the message being written, and of a finished answer's last message.
        self.live_controls = Controls(self.id, stop=True) if self.limits.controls else None
        self.final_controls = Controls(self.id, feedback=True) if self.limits.controls else None
        self.started = time.monotonic()  # answers waiting for the same budget land oldest first
        self.text = ""
        self.message_ids: list[str] = []
        self.final_at: float | None = None  # monotonic: when the final text landed
        self.fallback = ""  # "" | "whole_text" | "repost": how the final text had to land
        self._shown: list[str] = []
        self._shown_controls: list[Controls | None] = []
        self._holds: dict[int, set[str]] = {}  # message index → scopes still reserved for it
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._next_progress = 0.0
        self._writer: asyncio.Task[None] | None = None
        self._thinking: asyncio.Task[None] | None = None
        self._status_shown = False
        self._status_text = THINKING
        self._refused = False  # a reservation was refused: the budget was spent

    @property
    def has_text(self) -> bool:
        return bool(self.text.strip())

    @property
    def _reserve_windows(self) -> tuple[Window, ...]:
        """Every budget a message shown early will draw on once more: its post, its final.

        Short windows are waited on, not reserved: a hold there only counts the answer as
        live where its progress draws (the edit windows), and the final edit ends it. A
        hold in a short post window would outlive the answer and cost a release.
        """
        limits = self.limits
        every = limits.post_windows + limits.start_windows + limits.edit_windows + limits.finish_windows
        kept = (w for w in every if w.long or w in limits.edit_windows)
        return tuple(dict.fromkeys(kept))  # a window shared by two writes counts once

    def _member(self, index: int) -> str:
        return f"{self.id}:{index}"

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> ReplyStream:
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
        await asyncio.shield(self._release_holds())

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
        await self._land(split_message(final, self.limits.max_chars), self.final_controls)

    async def fail(self, message: str) -> None:
        """Nothing useful was shown and nothing will be: say what went wrong instead."""
        await self._stop_writer()
        await self._land(split_message(message, self.limits.max_chars), None)

    def set_status_text(self, text: str) -> None:
        """Show `text` as the status while no answer text is visible (the model is slow, or
        thinking); cosmetic, never blocks."""
        if self.message_ids or self.final_at is not None:
            return
        if self._status_shown and text == self._status_text:
            return  # already showing
        self._stop_thinking()  # this text replaces the delayed default
        self._status_text = text
        self._status_shown = True  # so the first text clears it
        self._in_background(self._set_status(text))

    async def _stop_writer(self) -> None:
        self._closing.set()
        if self._writer:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    # -- status ----------------------------------------------------------------

    async def _think(self) -> None:
        await self.pacer.clock.sleep(THINKING_DELAY)
        self._status_shown = True
        await self._set_status(self._status_text)

    async def _set_status(self, status: str | None) -> None:
        try:
            await self.surface.set_status(status)
        except Exception as exc:  # cosmetic; an answer must not fail for it
            log.debug("status update failed: %s", exc)

    def _stop_thinking(self) -> None:
        """A "thinking" status that lands after the answer would show again: drop it."""
        if self._thinking and not self._thinking.done():
            self._thinking.cancel()

    def _in_background(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        _background.add(task)
        task.add_done_callback(_background.discard)

    # -- progress --------------------------------------------------------------

    async def _wait_closing(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if the stream ended meanwhile."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.pacer.clock.real(seconds))
        return self._closing.is_set()

    async def _write_progress(self) -> None:
        changed = asyncio.create_task(self._changed.wait())
        closing = asyncio.create_task(self._closing.wait())
        try:
            while True:
                await asyncio.wait({changed, closing}, return_when=asyncio.FIRST_COMPLETED)
                if await self._wait_closing(self._next_progress - self.pacer.clock.now()):
                    return
                self._changed.clear()
                changed = asyncio.create_task(self._changed.wait())
                parts = split_message(self.text, self.limits.max_chars)
                try:
                    if len(parts) > len(self.message_ids):
                        await self._grow(parts)
                    elif parts[-1] != self._shown[-1]:
                        await self._progress(len(parts) - 1, parts[-1])
                except Exception as exc:  # progress is optional; the final text is retried
                    log.info("progress write skipped: %s", exc)
        finally:
            changed.cancel()
            closing.cancel()

    def _wait_at_least(self, seconds: float) -> None:
        self._next_progress = self.pacer.clock.now() + max(self.limits.min_edit_interval, seconds)

    async def _grow(self, parts: list[str]) -> None:
        """The text needs a new message: seal the one before it; post complete parts as they
        are, and the growing last one early if its final can be reserved (else try later)."""
        for index in range(len(self.message_ids), len(parts)):
            if index > 0 and (self._shown[index - 1], self._shown_controls[index - 1]) != (
                parts[index - 1], None
            ):
                if not await self._seal(index - 1, parts[index - 1], None):
                    self._wait_at_least(0)
                    return
                # The surface closes the message before it when it posts the next one.
                await self._use(self.limits.finish_windows, index - 1)
            if index < len(parts) - 1:
                await self._post(index, parts[index], None, early=False, priority=POST)
                continue
            grant = await self._reserve(index)
            if not grant.ok:
                self._refused = True
                self._wait_at_least(grant.spacing)  # the status stays up meanwhile
                return
            await self._post(index, parts[index], self.live_controls, early=True, priority=POST)
            self._wait_at_least(0)

    async def _reserve(self, index: int) -> Grant:
        windows = self._reserve_windows
        grant = await self.pacer.reserve(windows, self._member(index))
        for window in windows:
            if window.long:
                metrics.pacing(window.platform, window.method, "reserved" if grant.ok else "not_reserved")
        if grant.ok:
            self._holds[index] = {w.scope for w in windows}
        return grant

    async def _progress(self, index: int, text: str) -> None:
        grant = await self.pacer.progress(self.limits.edit_windows, self._member(index))
        self._wait_at_least(grant.spacing)
        if grant.ok:  # else the budget is for finals now; look again after `spacing`
            await self._progress_edit(index, text)

    async def _progress_edit(self, index: int, text: str) -> None:
        try:
            await self.surface.edit(self.message_ids[index], text, controls=self.live_controls)
        except SurfaceRateLimited as limited:
            await self.pacer.throttle(self.limits.edit_windows, limited.retry_after)
            return
        except Exception as exc:
            log.info("progress edit skipped: %s", exc)
            return
        self._shown[index] = text
        self._shown_controls[index] = self.live_controls

    # -- the final text ------------------------------------------------------------

    async def _land(self, parts: list[str], controls: Controls | None) -> None:
        """Write the final text: seal each shown message, post the rest, finish the surface.
        The last message gets `controls`; every other one loses any it had."""
        self._stop_thinking()
        if not self.message_ids and self._refused:
            self.fallback = "whole_text"  # no final could be reserved while the model wrote
        last = len(parts) - 1

        def controls_of(index: int) -> Controls | None:
            return controls if index == last else None

        for index in range(min(len(self.message_ids), len(parts))):
            if not await self._seal(index, parts[index], controls_of(index)):
                await self._repost(index, parts, controls_of)
                break
        for index in range(len(self.message_ids), len(parts)):
            await self._post(index, parts[index], controls_of(index), early=False)
        self.final_at = time.monotonic()
        if self.fallback:
            metrics.pacing_fallback(self._platform, self.fallback)
        if isinstance(self.surface, FinishingSurface) and self.message_ids:
            affordable = await self._use(self.limits.finish_windows, len(self.message_ids) - 1)
            try:
                await self.surface.finish(affordable=affordable)
            except Exception as exc:
                log.warning("could not finish the reply: %s", exc)

    @property
    def _platform(self) -> str:
        windows = self._reserve_windows + self.limits.post_windows
        return windows[0].platform if windows else "local"

    async def _seal(self, index: int, text: str, controls: Controls | None) -> bool:
        """The final edit of message `index`, with its reserved slot. False: it could not land
        without waiting longer than a final may."""
        if (self._shown[index], self._shown_controls[index]) == (text, controls):
            return True

        async def edit() -> None:
            if not await self._use(self.limits.edit_windows, index):
                raise _NoSlot
            await self.surface.edit(self.message_ids[index], text, controls=controls)

        try:
            await self._retrying(edit, self.limits.edit_windows, FINAL_WRITE_ATTEMPTS, FINAL_WAIT_MAX)
        except (_NoSlot, SurfaceRateLimited):
            return False
        self._shown[index] = text
        self._shown_controls[index] = controls
        return True

    async def _repost(
        self, index: int, parts: list[str], controls_of: Callable[[int], Controls | None]
    ) -> None:
        """A final edit could not land: post the text from message `index` on anew, delete the old."""
        self.fallback = "repost"
        stale = self.message_ids[index:]
        del self.message_ids[index:], self._shown[index:], self._shown_controls[index:]
        for position in range(index, len(parts)):
            await self._post(position, parts[position], controls_of(position), early=False)
        for message_id in stale:
            try:
                await self.surface.delete(message_id)
            except Exception as exc:
                log.warning("could not delete a partial message after reposting it: %s", exc)

    # -- writes --------------------------------------------------------------------

    async def _use(
        self,
        windows: tuple[Window, ...],
        index: int,
        priority: int = FINAL,
        *,
        wait: bool = False,
    ) -> bool:
        """Spend message `index`'s reservation in `windows`, or wait for a slot (`wait`).

        A write made while the model writes (`priority` POST) gives up its wait when the
        stream ends (`_StreamEnded`): its text then goes out with the final, first in line.
        """
        use = self.pacer.use(windows, self._member(index), priority, wait=wait, order=self.started)
        if priority == POST:
            ok = await unless_stopped(use, self._closing)
            if isinstance(ok, Stopped):
                raise _StreamEnded
        else:
            ok = await use
        if ok and index in self._holds:
            # A write while the model writes leaves the answer counted as live in short windows.
            self._holds[index] -= {w.scope for w in windows if w.long or priority == FINAL}
        return ok

    async def _post(
        self, index: int, text: str, controls: Controls | None, *, early: bool, priority: int = FINAL
    ) -> None:
        """Post message `index`: early (to be edited, with its final reserved) or complete.

        While the model writes (`priority` POST) the wait for a slot is given up when
        the stream ends: the final text then goes out first in line.
        """
        windows = self.limits.post_windows + (self.limits.start_windows if early else ())

        async def post() -> str:
            await self._use(windows, index, priority, wait=True)
            return await self.surface.post(text, complete=not early, controls=controls)

        # While the model writes, one try: the final text is retried until it lands.
        message_id = await self._retrying(post, windows, 1 if priority == POST else FINAL_WRITE_ATTEMPTS)
        self.message_ids.append(message_id)
        self._shown.append(text)
        self._shown_controls.append(controls)
        if len(self.message_ids) == 1:  # the first words are up
            self._stop_thinking()
            if self._status_shown:
                # Never cancelled: a clear cut short would leave the status up.
                self._in_background(self._set_status(None))

    async def _retrying(
        self,
        write: Callable[[], Awaitable[T]],
        windows: tuple[Window, ...],
        attempts: int,
        longest_wait: float = math.inf,
    ) -> T:
        """`write`, tried up to `attempts` times. A 429 slows everyone in scope down and is
        waited out here unless its Retry-After is over `longest_wait` (then it is raised)."""
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                return await write()
            except SurfaceRateLimited as limited:
                await self.pacer.throttle(windows, limited.retry_after)
                if attempt == attempts or limited.retry_after > longest_wait:
                    raise
                if not windows:
                    await self.pacer.clock.sleep(limited.retry_after)
            except _NoSlot:
                raise
            except Exception as exc:
                if attempt == attempts:
                    raise
                log.warning("platform write failed (attempt %d): %s", attempt, exc)
                await self.pacer.clock.sleep(delay)
                delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")

    async def _release_holds(self) -> None:
        windows = self._reserve_windows
        for index, scopes in self._holds.items():
            if scopes:
                try:
                    await self.pacer.release([w for w in windows if w.scope in scopes], self._member(index))
                except Exception as exc:  # the lease frees it anyway
                    log.debug("could not release a reservation: %s", exc)
        self._holds.clear()
