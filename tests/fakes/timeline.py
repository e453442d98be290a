"""What one message of the bot showed over time, as the fakes record it.

Both fake platforms keep a `Timeline` for every message the bot ever created
(deleted ones included), with a monotonic timestamp per visible change, so a
test can say not only what people see at the end but what they saw meanwhile:
how long a half-written answer stayed up, when the final text landed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Shown:
    """One visible state of a message, from `at` (time.monotonic()) until the next."""

    at: float
    text: str  # "" once the message is deleted
    live: bool = False  # a Slack native stream still open (shown as still being written)


@dataclass
class Timeline:
    channel: str
    message_id: str
    shown: list[Shown] = field(default_factory=list)

    def record(self, text: str, *, live: bool = False, at: float | None = None) -> None:
        """Note a change; a write that changes nothing visible is not a change."""
        state = Shown(time.monotonic() if at is None else at, text, live)
        if self.shown and (self.shown[-1].text, self.shown[-1].live) == (text, live):
            return
        self.shown.append(state)

    def at(self, moment: float) -> Shown | None:
        """The state shown at `moment` (None: not created yet)."""
        current = None
        for state in self.shown:
            if state.at > moment:
                break
            current = state
        return current
