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
  buttons, for an answer); no other message carries any;
- when edits cannot keep the answer moving (`bot.delivery.pacing`, rule 5) and the surface allows
  it (`SurfaceLimits.parts`), the message shown stops changing and the text goes on in
  parts, messages of their own posted complete (`part_cut`); the last part, posted when
  the model is done, carries the feedback buttons, and the first message's Stop is taken
  off with its reserved final edit. While edits may still come, a message shows whole
  words only, so a part never starts in the middle of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from bot.contract import Controls, FinishingSurface, ReplySurface, StepSurface, StepView, SurfaceRateLimited
from bot.contract.budgets import FINAL, POST, Grant, Window
from bot.delivery.pacing import EDIT_SPACING_MAX, FINAL_WAIT_MAX, Pacer, next_part_check, part_cut
from bot.delivery.splitting import FENCE_CLOSE, complete_words, open_fence, split_message
from bot.delivery.tasks import Stopped, unless_stopped
from bot.ops import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

THINKING = "is thinking…"
# How an answer that ended early is marked, the same for answers and summaries.
STOPPED_NOTE = "_(stopped)_"


def interrupted_note(reason: str) -> str:
    return f"_(Interrupted: {reason})_"


RESTARTING_NOTE = interrupted_note("the bot is restarting; please ask again.")
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
        self._steps = ""  # the tool steps section at the start of `text`
        self._steps_unsent = False  # steps a `StepSurface` holds for the next write
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
        # Parts (bot.delivery.pacing, rule 5): the text before `_cut` is shown in complete messages;
        # `_carry` reopens a code fence a part closed; `_anchor` is the message shown before
        # the parts began (with its final reserved), closed when the first part is posted.
        self._parts = False
        self._cut = 0
        self._carry = ""
        self._anchor: int | None = None
        self._anchor_open = False
        self._parted = False  # a part was posted: the answer lands as parts
        # Visible changes, for the longest-wait metric (real seconds) and the part rule (clock).
        self._first_token: float | None = None
        self._last_visible: float | None = None
        self._longest_wait = 0.0
        self._changed_at = 0.0

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
        kept = (w for w in limits.edit_windows + every if w.long or w in limits.edit_windows)
        return tuple(dict.fromkeys(kept))  # a window shared by two writes counts once; edits first

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

    def set_steps(self, section: str, views: Sequence[StepView] = ()) -> None:
        """The tool steps (bot/tools/loop.py), shown with the answer's own writes: beside the text
        where the surface can (`StepSurface`, Slack's task cards), else as a section at the top
        of the text; once the answer goes on in parts, a section already shown stays."""
        if isinstance(self.surface, StepSurface) and self.surface.show_steps(views):
            self._steps_unsent = True  # the next write carries them, even with no new text
            self._changed.set()
            return
        if self._parted or self._cut:
            return
        shown = section + "\n\n" if section else ""
        self.text = shown + self.text[len(self._steps):]
        self._steps = shown
        self._changed.set()

    @property
    def answer_text(self) -> str:
        """The answer without its steps section (what the history keeps)."""
        return self.text[len(self._steps):]

    def add(self, text: str) -> None:
        if text:
            if self._first_token is None:
                self._first_token = time.monotonic()
                self._changed_at = self.pacer.clock.now()
            self.text += text
            self._changed.set()

    async def finish(self, note: str = "") -> None:
        """The stream ended: land the final text (with `note` appended, if any)."""
        await self._stop_writer()
        if self._parted:
            await self._land_parts(note, self.final_controls)
            return
        final = self.text.strip() or EMPTY_ANSWER
        if note:
            final = f"{final}\n\n{note}"
        await self._land(split_message(final, self.limits.max_chars), self.final_controls)

    async def land(self, note: str) -> None:
        """End early: the text so far with `note` after it, or `note` alone when nothing was
        written. Never raises: it runs on the way out (a Stop, a shutdown)."""
        try:
            await (self.finish(note) if self.has_text else self.fail(note))
        except Exception as exc:
            log.error("could not mark an answer as ended early: %s", exc)

    async def fail(self, message: str) -> None:
        """Nothing useful was shown and nothing will be: say what went wrong instead."""
        await self._stop_writer()
        if self._parted:
            await self._land_parts(message, None)
            return
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
                try:
                    if self._parts:
                        await self._part()
                    else:
                        await self._show_progress()
                except Exception as exc:  # progress is optional; the final text is retried
                    log.info("progress write skipped: %s", exc)
        finally:
            changed.cancel()
            closing.cancel()

    async def _show_progress(self) -> None:
        """One message, or a long answer's several: post what needs a new one, else edit."""
        parts = split_message(self.text, self.limits.max_chars)
        if self.limits.parts and len(parts) == 1:
            parts = [complete_words(parts[0])]  # parts may follow: never half a word
        if len(parts) > len(self.message_ids):
            await self._grow(parts)
        elif parts[-1] != self._shown[-1] or self._steps_unsent:
            await self._progress(len(parts) - 1, parts[-1])

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
                if self._may_part(index):
                    await self._start_parts(None)  # its first words go out as a part of their own
                    return
                # The status stays up meanwhile; look again when the budget may have room.
                self._next_progress = self.pacer.clock.now() + min(grant.spacing, grant.wait)
                return
            await self._post(index, parts[index], self.live_controls, early=True, priority=POST)
            self._wait_at_least(0)
            if self._may_part(index) and grant.spacing > EDIT_SPACING_MAX:
                await self._start_parts(index)

    async def _reserve(self, index: int) -> Grant:
        windows = self._reserve_windows
        paced = sum(1 for w in windows if w in self.limits.edit_windows)  # they come first
        grant = await self.pacer.reserve(windows, self._member(index), progress_windows=paced)
        for window in windows:
            if window.long:
                metrics.pacing(window.platform, window.method, "reserved" if grant.ok else "not_reserved")
        if grant.ok:
            self._holds[index] = {w.scope for w in windows}
        return grant

    async def _progress(self, index: int, text: str) -> None:
        grant = await self.pacer.progress(self.limits.edit_windows, self._member(index))
        if grant.ok:
            self._wait_at_least(grant.spacing)
            await self._progress_edit(index, text)
        else:
            # Look again when the window has room (or after `spacing`, if sooner): nothing
            # was written, so no edit interval applies.
            self._next_progress = self.pacer.clock.now() + min(grant.spacing, grant.wait)
        if self._may_part(index) and (not grant.ok or grant.spacing > EDIT_SPACING_MAX):
            await self._start_parts(index)  # edits cannot keep it moving

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
        self._steps_unsent = False
        self._visible_change()

    # -- parts (bot.delivery.pacing, rule 5) ---------------------------------------------------

    def _may_part(self, index: int) -> bool:
        """Whether the answer may go on in parts from here: the surface allows it, and it
        is still one message (a long answer's messages keep the split of `bot.delivery.splitting`)."""
        return self.limits.parts and not self._parts and index == 0 and len(self.message_ids) <= 1

    async def _start_parts(self, anchor: int | None) -> None:
        """Stop editing: what message `anchor` shows stays (its final reserved, to take its
        Stop off at the end), and the rest of the text goes on in parts."""
        self._parts = True
        if anchor is not None:
            await self._anchor_at(anchor)
        await self._part()  # a message already full goes now

    async def _anchor_at(self, anchor: int) -> None:
        shown = self._shown[anchor]
        assert self.text.startswith(shown), "a message shown early shows the start of the text"
        self._anchor, self._anchor_open, self._cut = anchor, True, len(shown)
        fence = open_fence(shown)  # shown closed while it grew: the parts go on inside it
        self._carry = fence + "\n" if fence is not None else ""

    def _rest(self) -> str:
        """The text not shown yet, as the next part would start it."""
        rest = self.text[self._cut :]
        return rest.lstrip("\n") if self._carry else rest.lstrip()

    async def _part(self) -> None:
        """Post the next part if `part_cut` says so; else look again when it may."""
        rest = self._rest()
        start = len(self.text) - len(rest)  # where `rest` begins (the text grows while we post)
        waited = self.pacer.clock.now() - self._changed_at
        first = not self.message_ids
        room = self.limits.max_chars - len(self._carry) - len(FENCE_CLOSE)
        cut = part_cut(rest, waited, first=first, room=room)
        if cut is None:
            self._next_progress = self.pacer.clock.now() + next_part_check(waited, first=first)
            return
        text = self._carry + rest[:cut].rstrip()
        fence = open_fence(text)
        if fence is not None:
            text += FENCE_CLOSE
        await self._close_anchor()
        await self._post(len(self.message_ids), text, None, early=False, priority=POST)
        self._parted = True
        self._cut = start + cut
        self._carry = fence + "\n" if fence is not None else ""
        metrics.progress_part(self._platform)
        self._wait_at_least(0)

    async def _close_anchor(self) -> None:
        """The message shown before the parts is complete once a part follows it: on a
        surface that finishes messages (a native stream), it is finished now, with its
        reserved slot. (Until a part follows it, the answer may still end in it: an answer
        done before its first part lands as one message, its final edit reserved.)"""
        anchor = self._anchor
        if anchor is not None and self._anchor_open:
            self._anchor_open = False
            await self._use(self.limits.finish_windows, anchor)
            unneeded = [w for w in self.limits.edit_windows if w not in self.limits.finish_windows]
            if self.live_controls is None and unneeded:
                # Nothing to take off at the end: the edit budget it held is for other answers.
                await self.pacer.release(unneeded, self._member(anchor))
                self._holds[anchor] = self._holds.get(anchor, set()) - {w.scope for w in unneeded}

    async def _land_parts(self, note: str, controls: Controls | None) -> None:
        """The model is done: post the rest of the text (and `note`) as the last part(s), the
        very last with `controls`, then take the Stop off the message shown first."""
        self._stop_thinking()
        rest = self._rest().rstrip()
        text = self._carry + rest if rest else ""
        final = "\n\n".join(t for t in (text, note) if t) or (EMPTY_ANSWER if not self.message_ids else "")
        pieces = split_message(final, self.limits.max_chars) if final else []
        await self._close_anchor()
        for number, piece in enumerate(pieces):
            last = number == len(pieces) - 1
            await self._post(len(self.message_ids), piece, controls if last else None, early=False)
        if not pieces and self.message_ids:
            # Nothing was left to post (a text ending in blank lines): the last part takes the
            # buttons with an edit, if one can be had without waiting.
            await self._seal(len(self.message_ids) - 1, self._shown[-1], controls)
        anchor = self._anchor
        if (
            anchor is not None
            and anchor < len(self.message_ids) - 1
            and not await self._seal(anchor, self._shown[anchor], None)
        ):
            log.info("could not take the Stop button off answer %s's first message", self.id)
        self.final_at = time.monotonic()
        self._observe_wait()
        if isinstance(self.surface, FinishingSurface) and self.message_ids:
            try:  # every part was posted complete: nothing is left streaming to pay for
                await self.surface.finish(affordable=False)
            except Exception as exc:
                log.warning("could not finish the reply: %s", exc)

    def _visible_change(self) -> None:
        """People see something new: note how long they waited for it while the model wrote."""
        now = time.monotonic()
        since = self._last_visible if self._last_visible is not None else self._first_token
        if since is not None and self.final_at is None:
            self._longest_wait = max(self._longest_wait, now - since)
        self._last_visible = now
        self._changed_at = self.pacer.clock.now()

    def _observe_wait(self) -> None:
        if self._first_token is not None and self._last_visible is not None:
            metrics.progress_longest_wait(self._platform, self._longest_wait)

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
        self._observe_wait()
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
        shown = (self._shown[index], self._shown_controls[index])
        if shown == (text, controls) and not self._steps_unsent:
            return True

        async def edit() -> None:
            if not await self._use(self.limits.edit_windows, index):
                raise _NoSlot
            await self.surface.edit(self.message_ids[index], text, controls=controls)

        try:
            await self._retrying(edit, self.limits.edit_windows, FINAL_WRITE_ATTEMPTS, FINAL_WAIT_MAX)
        except (_NoSlot, SurfaceRateLimited):
            return False
        if self._shown[index] != text:
            self._visible_change()
        self._shown[index] = text
        self._shown_controls[index] = controls
        self._steps_unsent = False
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
        first = not self.message_ids  # the answer's first words
        use = self.pacer.use(
            windows, self._member(index), priority, wait=wait, order=self.started, first=first
        )
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
        self._steps_unsent = False
        self._shown.append(text)
        self._shown_controls.append(controls)
        self._visible_change()
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
