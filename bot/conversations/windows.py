"""A summary's time window as people type it (`/summarize 2h`, `24h`, `7d`, `since monday`),
parsed once for every platform."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DEFAULT = "24h"
MOST_DAYS = 30  # beyond it a channel summary is a history read, not a catch-up
_UNITS = {"m": 60, "min": 60, "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}
_SPAN = re.compile(r"^(\d{1,4})\s*(m|min|h|hours?|d|days?)$")
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
HOW = "Give a window like `2h`, `24h` (the default), `7d` or `since monday`."


class BadWindow(ValueError):
    """Not a window; `str(self)` says what is, for the person who typed it."""


@dataclass(frozen=True)
class TimeWindow:
    oldest: float  # seconds since the epoch: messages at or after it are read
    words: str  # "the last 24 hours", for the summary's notes


def parse_window(text: str, now: float) -> TimeWindow:
    """The window `text` names, ending `now` (UTC days for `since <weekday>`)."""
    typed = " ".join(text.lower().split()) or DEFAULT
    if typed.startswith("since "):
        day = typed.removeprefix("since ")
        if day not in _DAYS:
            raise BadWindow(f"`{text.strip()}` is not a window I know. {HOW}")
        today = datetime.fromtimestamp(now, UTC)
        back = (today.weekday() - _DAYS.index(day)) % 7 or 7
        start = (today - timedelta(days=back)).replace(hour=0, minute=0, second=0, microsecond=0)
        return TimeWindow(start.timestamp(), f"the time since {day.capitalize()}")
    match = _SPAN.match(typed)
    if not match:
        raise BadWindow(f"`{text.strip()}` is not a window I know. {HOW}")
    count, unit = int(match.group(1)), match.group(2)
    seconds = count * _UNITS[unit]
    if count == 0 or seconds > MOST_DAYS * 86400:
        raise BadWindow(f"A window is at least a minute and at most {MOST_DAYS} days. {HOW}")
    name = {60: "minute", 3600: "hour", 86400: "day"}[_UNITS[unit]]
    return TimeWindow(now - seconds, f"the last {count} {name}{'s' if count != 1 else ''}")
