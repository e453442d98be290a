"""Platform write budgets shared by every live answer in a scope.

Slack allows about 50 `chat.update` calls a minute per workspace; Discord
about 5 edits per 5 seconds per channel. Those are budgets for *all* live
answers in that workspace or channel together, so they are modelled as one
`RateWindow` per scope that every reply stream draws from.

A window is a sliding window ("at most `limit` writes in any `per` seconds"),
which is never looser than a platform's fixed-window bucket, so a stream that
paces by it does not hit 429s.

Two kinds of writes draw from it:

- *Progress* edits are optional. They are taken only when the window has
  more free slots than there are live answers still owed a final write
  (`reserved`, capped for short windows: see `held_back`), so progress never
  eats the budget the finals need.
- *Required* writes (first post, final text, continuation messages) wait for
  a slot, in priority order: the final text of an answer goes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Iterable

SHORT_WINDOW = 2.0  # seconds; see RateWindow.held_back
FINAL = 0  # priorities for `acquire`: lower goes first
POST = 1


class RateWindow:
    def __init__(self, limit: int, per: float, name: str = "") -> None:
        if limit < 1 or per <= 0:
            raise ValueError("a rate window needs limit >= 1 and per > 0")
        self.limit = limit
        self.per = per
        self.name = name
        self.reserved = 0  # live answers that will still need one final write
        self._sent: deque[float] = deque()
        self._queue: list[tuple[int, int]] = []
        self._tickets = itertools.count()
        self._blocked_until = 0.0
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"RateWindow({self.name!r}, {self.limit}/{self.per}s, used={len(self._sent)})"

    # -- bookkeeping -------------------------------------------------------

    def _expire(self, now: float) -> None:
        while self._sent and now - self._sent[0] >= self.per:
            self._sent.popleft()

    def free_slots(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        self._expire(now)
        if now < self._blocked_until:
            return 0
        return self.limit - len(self._sent)

    def _next_change_in(self, now: float) -> float:
        """Seconds until a slot frees or the 429 back-off ends."""
        waits = [self._blocked_until - now]
        if len(self._sent) >= self.limit:
            waits.append(self._sent[0] + self.per - now)
        return max(0.001, *waits)

    def record(self, now: float) -> None:
        """Count one write made at `now`."""
        self._sent.append(now)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- public ------------------------------------------------------------

    @property
    def held_back(self) -> int:
        """Slots progress edits must leave free for finals.

        In a long window (Slack's minute) a final that finds no slot could wait a
        minute, so one slot per live answer is held back. In a short one (Discord's
        bot-wide second) it waits under a second, so at most half is held back and
        many answers at once still show progress.
        """
        if self.per <= SHORT_WINDOW:
            return min(self.reserved, self.limit // 2)
        return self.reserved

    def has_spare(self, now: float) -> bool:
        """Is there a slot for an optional progress edit, beyond what finals need?"""
        return not self._queue and self.free_slots(now) > self.held_back

    async def acquire(self, priority: int = FINAL) -> None:
        """Wait for a slot for a required write; lower priority values go first."""
        ticket = (priority, next(self._tickets))
        heapq.heappush(self._queue, ticket)
        try:
            while True:
                now = time.monotonic()
                if self._queue[0] == ticket and self.free_slots(now) > 0:
                    heapq.heappop(self._queue)
                    self.record(now)
                    self._notify()
                    return
                changed = self._changed
                delay = self._next_change_in(now) if self._queue[0] == ticket else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), delay)
        except BaseException:
            if ticket in self._queue:
                self._queue.remove(ticket)
                heapq.heapify(self._queue)
                self._notify()
            raise

    def back_off(self, seconds: float) -> None:
        """The platform answered 429: nobody writes in this scope for `seconds`."""
        self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)
        self._notify()


class WindowRegistry:
    """Hands out one shared `RateWindow` per scope key (workspace, channel, bot)."""

    def __init__(self) -> None:
        self._windows: dict[str, RateWindow] = {}

    def get(self, key: str, limit: int, per: float) -> RateWindow:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = RateWindow(limit, per, name=key)
        return window


def try_take_progress(windows: Iterable[RateWindow]) -> bool:
    """Take a progress slot in every window, or in none."""
    now = time.monotonic()
    windows = tuple(windows)
    if all(window.has_spare(now) for window in windows):
        for window in windows:
            window.record(now)
        return True
    return False


async def acquire_all(windows: Iterable[RateWindow], priority: int = FINAL) -> None:
    for window in windows:
        await window.acquire(priority)
