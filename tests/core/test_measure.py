"""tests/support/measure.py on made-up timelines: what counts as exact, late and exposed."""

from __future__ import annotations

import math

from tests.fakes.llm import StreamLog
from tests.fakes.timeline import Shown, Timeline
from tests.support.measure import Asked, percentile, see, summarize

FINAL = "k1.w1 k1.w2 k1.w3"


def stream(last_token: float = 10.0, key: str = "k1", text: str = FINAL) -> StreamLog:
    return StreamLog(f"Alice: question {key}", arrived=9.0, first_token=9.5, last_token=last_token, text=text)


def message(*states: tuple[float, str] | tuple[float, str, bool], ts: str = "1") -> Timeline:
    return Timeline("C1", ts, [Shown(*state) for state in states])


def test_edited_to_the_final_text() -> None:
    seen = see("k1", stream(), [message((9.6, "k1.w1"), (10.4, FINAL))], until=20.0)
    assert seen.exact
    assert seen.final_lag is not None and math.isclose(seen.final_lag, 0.4)
    assert math.isclose(seen.exposure, 0.4)  # the partial text stayed up 0.4 s after the end


def test_partial_deleted_after_the_whole_text_was_posted_anew() -> None:
    partial = message((9.6, "k1.w1"), (12.5, ""), ts="1")
    whole = message((12.0, FINAL), ts="2")
    seen = see("k1", stream(), [partial, whole], until=20.0)
    assert seen.exact
    # Final only once the partial is gone: both showed together from 12.0 to 12.5.
    assert seen.final_lag is not None and math.isclose(seen.final_lag, 2.5)
    assert math.isclose(seen.exposure, 2.5)


def test_status_then_whole_text_exposes_nothing() -> None:
    seen = see("k1", stream(), [message((10.3, FINAL))], until=20.0)
    assert seen.exact and seen.exposure == 0.0


def test_a_stream_left_open_is_not_final() -> None:
    seen = see("k1", stream(), [message((9.6, "k1.w1", True), (10.2, FINAL, True))], until=20.0)
    assert not seen.exact and seen.live and seen.final_lag is None
    assert math.isclose(seen.exposure, 10.0)  # until the end of observation


def test_a_final_overwritten_later_counts_from_the_last_change() -> None:
    seen = see("k1", stream(), [message((10.1, FINAL), (11.0, "k1.w1"), (13.0, FINAL))], until=20.0)
    assert seen.final_lag is not None and math.isclose(seen.final_lag, 3.0)


def test_summary_sorts_messages_by_answer_and_reports_misses() -> None:
    other = "k2.w1 k2.w2"
    asked = [Asked("k1", 8.9), Asked("k2", 8.9, follow_up=True), Asked("k3", 8.9)]
    streams = [stream(), stream(key="k2", text=other)]
    timelines = [
        message((9.6, "k1.w1"), (10.2, FINAL), ts="1"),
        message((10.1, other), ts="2"),
        message((10.5, "Something went wrong"), ts="3"),
    ]
    summary = summarize(asked, streams, timelines, until=20.0, limited=1, writes=10)
    assert summary.exact == 2 and summary.total == 3 and summary.missing == ["k3"]
    assert summary.stray == 1
    assert summary.follow_up_intakes == [9.0 - 8.9]
    problems = summary.problems()
    assert any("no model request" in p for p in problems)
    assert any("belong to no answer" in p for p in problems)
    assert any("429s 1/10" in p for p in problems)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.9) == 90.0
    assert percentile(values, 1.0) == 100.0
    assert math.isnan(percentile([], 0.5))
