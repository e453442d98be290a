"""The clock the core waits on: wall-clock time and a way to wait, injectable.

Everything that paces or delays a reply asks this clock rather than `time` and
`asyncio.sleep` directly: the pacer's shared windows (their times are compared
across processes, so they are wall-clock seconds), the reply stream's edit
spacing and its "thinking" status, and the engine's "still working" status.
Tests inject a clock of their own: one they move by hand (tests/core/test_pacing.py),
or one that runs faster than the wall (tests/support/clock.py), so a test of minutes of
pacing takes seconds and the suite waits less where it used to wait in real time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds (comparable across processes and hosts)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock."""
        ...

    def real(self, seconds: float) -> float:
        """How many seconds of the event loop `seconds` of this clock take (for timeouts)."""
        ...


class SystemClock:
    """The wall clock, in real time."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def real(self, seconds: float) -> float:
        return seconds
