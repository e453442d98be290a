"""Virtual time for end-to-end tests: a clock `speed` times faster than the wall.

The bot waits on `bot.clock.Clock` (pacing windows, edit spacing, statuses); the
fakes wait on the same clock (the model's token pace, Slack's and Discord's rate
windows). Injected into both, a test of seconds of streaming and pacing runs in a
fraction of them and still sees the same order of events: every wait on either
side shrinks by the same factor. What it measures (tests/support/measure.py, the fakes'
records) stays in real seconds, so a latency test runs at speed 1 (`REAL_TIME`).
"""

from __future__ import annotations

import asyncio
import time

# The suite's default: 4 times faster. Waits of the bot and the fakes shrink by it; the
# work between them does not, so a few ms of real overhead look like a few times that.
SPEED = 4.0


class FastClock:
    """`bot.clock.Clock` running `speed` times faster than the wall, from when it was made."""

    def __init__(self, speed: float = SPEED) -> None:
        self.speed = speed
        self._wall = time.time()
        self._mono = time.monotonic()

    def now(self) -> float:
        return self._wall + (time.monotonic() - self._mono) * self.speed

    def monotonic(self) -> float:
        """Like `now`, on the monotonic clock (the fakes' windows)."""
        return self._mono + (time.monotonic() - self._mono) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.speed)

    def real(self, seconds: float) -> float:
        return seconds / self.speed


REAL_TIME = FastClock(1.0)
