"""Summary windows as people type them (`bot.conversations.windows`), good and bad."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.conversations.windows import BadWindow, parse_window

NOW = datetime(2026, 12, 9, 15, 30, tzinfo=UTC).timestamp()  # a Wednesday


@pytest.mark.parametrize(("typed", "seconds", "words"), [
    ("", 86400, "the last 24 hours"),
    ("2h", 7200, "the last 2 hours"),
    ("7d", 7 * 86400, "the last 7 days"),
    (" 1 hour ", 3600, "the last 1 hour"),
    ("45m", 2700, "the last 45 minutes"),
])
def test_spans(typed: str, seconds: int, words: str) -> None:
    window = parse_window(typed, NOW)
    assert (NOW - window.oldest, window.words) == (seconds, words)


def test_since_a_weekday_starts_at_its_midnight_utc() -> None:
    monday = parse_window("since Monday", NOW)
    assert monday.oldest == datetime(2026, 12, 7, tzinfo=UTC).timestamp()
    assert monday.words == "the time since Monday"
    # The same weekday as today means a week ago.
    assert parse_window("since wednesday", NOW).oldest == datetime(2026, 12, 2, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("typed", ["yesterday", "0h", "31d", "h", "-2h", "since funday", "99999d"])
def test_what_is_not_a_window_is_said(typed: str) -> None:
    with pytest.raises(BadWindow, match="24h"):
        parse_window(typed, NOW)
