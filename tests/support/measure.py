"""Measuring streamed answers from the outside: what people saw, and when.

Shared by the end-to-end pacing tests and the benchmarks. It reads the fakes'
records only, never the bot's internals:

- the fake model's `StreamLog`s: when each request arrived, when its last token
  left, and the whole text it streamed;
- the fake platforms' `Timeline`s: every visible state of every message the bot
  created (deleted ones too), with its time.

Each answer is tagged (`Answer.tagged(n, KEY)`), so a message belongs to the
answer whose text contains what it showed, whichever way the bot wrote it (one
message edited, several parts, a partial one deleted and the whole text posted
anew). An answer's state at a moment is its messages' texts joined in creation
order, and "live" while a native stream is still open. From that:

- exact: the last state is the final text, not live (the drivers compare texts with
  whitespace collapsed and messages joined by a newline: an answer may go on in a
  new message, split where the model's text has a space; every word must be there,
  once, in order);
- final lag: last token → the moment the final state appeared for good;
- exposure: how long after the stream ended a partial (or still-live) text was up;
- intake: question sent → the model request for it;
- progress (issue 26): first text, the model's first token → the first words shown; the
  longest wait between two visible changes of the answer while the model streams (from the
  first token, each gap that starts before the last token, up to the change that ends it);
  parts, the messages the answer took.

The targets are issue 8's, for every run. The test suite asserts what does not depend on
the machine's speed (`Summary.wrong`); the benchmarks print the time targets each run
missed too (`Summary.late`), in their "issue 8 targets" column.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.llm import FakeLLM, StreamLog
from tests.fakes.timeline import Timeline
from tests.support.helpers import wait_until

LAG_P90 = 1.0  # s, last token → final text, 90th percentile
LAG_MAX = 3.0  # s, the same, worst answer
EXPOSURE_MAX = 3.0  # s a partial text may stay up after its stream ended
INTAKE_MAX = 0.5  # s, a question (follow-ups included) sent → its model request
LIMITED_SHARE = 0.01  # 429s / platform writes
FIRST_TEXT_P90 = 1.0  # s, the model's first token → the first words shown (issue 26)
WAIT_P90 = 3.0  # s, the longest wait between visible changes while the model streams (issue 26)

Normalize = Callable[[str], str]


def exact_text(text: str) -> str:
    return text


def loose_whitespace(text: str) -> str:
    """Discord parts may split at a newline the joined text shows as a space."""
    return " ".join(text.split())


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (p90 of 100 values is the 90th smallest); nan if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class Asked:
    """One question a test or bench sent: its tag, and when it was sent."""

    key: str
    sent_at: float
    follow_up: bool = False


@dataclass(frozen=True)
class Seen:
    """One answer as people saw it."""

    key: str
    expected: str
    shown: str  # what its messages show at the end
    live: bool  # and whether a stream of it is still open then
    exact: bool
    final_lag: float | None  # None: the exact final never showed (for good)
    exposure: float
    intake: float | None  # None: no time of sending known
    follow_up: bool
    messages: int
    first_text: float | None = None  # None: nothing shown, or no first token known
    longest_wait: float | None = None  # None: the model sent no token

    @property
    def lag_or_inf(self) -> float:
        return math.inf if self.final_lag is None else self.final_lag


def claim(
    timelines: Iterable[Timeline], texts: dict[str, str], normalize: Normalize = exact_text
) -> tuple[dict[str, list[Timeline]], list[Timeline]]:
    """Sort messages by answer: the one answer whose text contains a text the message showed.

    Returns the messages per answer key (in creation order) and those no answer
    claims (an error text, a stray message): a test should expect none of those.
    """
    owned: dict[str, list[Timeline]] = {key: [] for key in texts}
    stray: list[Timeline] = []
    for timeline in sorted(timelines, key=lambda t: t.shown[0].at if t.shown else 0.0):
        owner = None
        for state in timeline.shown:
            piece = normalize(state.text).strip()
            owners = [key for key, text in texts.items() if piece and piece in text]
            if len(owners) == 1:
                owner = owners[0]
                break
        if owner is None:
            if any(state.text for state in timeline.shown):
                stray.append(timeline)
        else:
            owned[owner].append(timeline)
    return owned, stray


def state_at(messages: Sequence[Timeline], moment: float, sep: str) -> tuple[str, bool]:
    """The answer's joined text at `moment`, and whether any of its messages is live."""
    texts, live = [], False
    for message in messages:
        state = message.at(moment)
        if state is not None and state.text:
            texts.append(state.text)
            live = live or state.live
    return sep.join(texts), live


def see(
    key: str,
    stream: StreamLog,
    messages: Sequence[Timeline],
    until: float,
    *,
    asked: Asked | None = None,
    sep: str = "",
    normalize: Normalize = exact_text,
) -> Seen:
    """Measure one answer; `until` is when observation ended (a state lasts until then)."""
    expected = normalize(stream.text)
    last_token = stream.last_token if stream.last_token is not None else until
    moments = sorted({state.at for message in messages for state in message.shown})
    states = [state_at(messages, moment, sep) for moment in moments]

    def final(state: tuple[str, bool]) -> bool:
        return normalize(state[0]) == expected and not state[1]

    shown, live = states[-1] if states else ("", False)
    exact = bool(states) and final(states[-1])
    final_lag = None
    if exact:
        start = len(states) - 1
        while start > 0 and final(states[start - 1]):
            start -= 1
        final_lag = max(0.0, moments[start] - last_token)
    first_text, longest_wait = progress(stream, moments, [bool(s[0]) for s in states], until)
    exposure = 0.0
    for index, state in enumerate(states):
        if not state[0] or final(state):
            continue  # nothing shown (a status at most), or the final text
        ends = moments[index + 1] if index + 1 < len(moments) else until
        exposure = max(exposure, ends - last_token)
    return Seen(
        key=key,
        expected=expected,
        shown=shown,
        live=live,
        exact=exact,
        final_lag=final_lag,
        exposure=exposure,
        intake=None if asked is None else stream.arrived - asked.sent_at,
        follow_up=asked is not None and asked.follow_up,
        messages=len(messages),
        first_text=first_text,
        longest_wait=longest_wait,
    )


def progress(
    stream: StreamLog, moments: Sequence[float], shows_text: Sequence[bool], until: float
) -> tuple[float | None, float | None]:
    """(first token → first text shown, longest wait between visible changes while streaming).

    A wait that starts before the last token runs until the next change, however late: an
    answer frozen from its first words until its final waited all that time."""
    if stream.first_token is None:
        return None, None
    shown = [at for at, text in zip(moments, shows_text, strict=True) if text]
    first_text = max(0.0, shown[0] - stream.first_token) if shown else None
    last_token = stream.last_token if stream.last_token is not None else until
    changes = [at for at in moments if at > stream.first_token]
    points = [stream.first_token, *changes, until]
    waits = [b - a for a, b in itertools.pairwise(points) if a < last_token]
    return first_text, max(waits, default=0.0)


@dataclass
class Summary:
    """A run's answers and the platform's 429s: the figures issue 8 sets targets for."""

    answers: list[Seen]
    limited: int  # platform answers that were 429
    writes: int  # platform writes the bot attempted (429s included)
    missing: list[str] = field(default_factory=list)  # questions no model request came for
    stray: int = 0  # bot messages no answer claims
    cpu: float | None = None  # seconds, for benches

    @property
    def lags(self) -> list[float]:
        return [seen.lag_or_inf for seen in self.answers]

    @property
    def exposures(self) -> list[float]:
        return [seen.exposure for seen in self.answers]

    @property
    def first_texts(self) -> list[float]:
        """First token → first text; an answer that never showed text counts as infinite."""
        return [math.inf if s.first_text is None else s.first_text for s in self.answers]

    @property
    def longest_waits(self) -> list[float]:
        return [s.longest_wait for s in self.answers if s.longest_wait is not None]

    def progress_row(self, name: str, missed: list[str] | None = None) -> dict[str, str]:
        """One line of a benchmark's progress table (issue 26): how the answers moved."""
        answers = max(1, len(self.answers))
        waits = self.longest_waits
        return {
            "run": name,
            "first text p90": fmt_s(percentile(self.first_texts, 0.9)),
            "longest wait between changes p50 / p90": (
                f"{fmt_s(percentile(waits, 0.5))} / {fmt_s(percentile(waits, 0.9))}"
            ),
            "writes / answer": f"{self.writes / answers:.1f}",
            "parts / answer": f"{sum(s.messages for s in self.answers) / answers:.1f}",
            "429s": str(self.limited),
        } | ({} if missed is None else {"targets": "; ".join(missed) or "met"})

    def progress_late(
        self, *, first_text_p90: float = FIRST_TEXT_P90, wait_p90: float = WAIT_P90
    ) -> list[str]:
        """Issue 26's progress targets the run missed, in words; [] when it met them."""
        out = []
        if self.answers and percentile(self.first_texts, 0.9) > first_text_p90:
            out.append(f"first text p90 {fmt_s(percentile(self.first_texts, 0.9))} > {first_text_p90} s")
        waits = self.longest_waits
        if waits and percentile(waits, 0.9) > wait_p90:
            out.append(f"longest wait p90 {fmt_s(percentile(waits, 0.9))} > {wait_p90} s")
        return out

    @property
    def follow_up_intakes(self) -> list[float]:
        return [s.intake for s in self.answers if s.follow_up and s.intake is not None]

    @property
    def intakes(self) -> list[float]:
        return [s.intake for s in self.answers if s.intake is not None]

    @property
    def exact(self) -> int:
        return sum(seen.exact for seen in self.answers)

    @property
    def total(self) -> int:
        return len(self.answers) + len(self.missing)

    def worst(self, values: Callable[[Seen], float | None], count: int = 3) -> str:
        ranked = sorted(self.answers, key=lambda s: -(values(s) or 0.0))[:count]
        return ", ".join(f"{s.key} {fmt_s(values(s))}" for s in ranked)

    def wrong(self, *, limited_share: float | None = LIMITED_SHARE) -> list[str]:
        """What went wrong whatever the machine's speed, in words: a question never asked of the
        model, a final text not exact (missing, partial, doubled), a message no answer claims,
        too many 429s. [] when nothing did. This is what the test suite asserts under load; how
        soon it all happened (`late`) is the benchmarks' to measure (bench/)."""
        out = []
        if self.missing:
            out.append(f"no model request for {len(self.missing)} questions: {self.missing[:5]}")
        if self.exact < len(self.answers) or self.missing:
            wrong = [s for s in self.answers if not s.exact][:3]
            shown = "; ".join(
                f"{s.key} shows {s.shown[:40]!r}{'… (still streaming)' if s.live else ''}" for s in wrong
            )
            out.append(f"exact finals {self.exact}/{self.total}: {shown}")
        if self.stray:
            out.append(f"{self.stray} bot messages belong to no answer")
        if limited_share is not None and self.limited > limited_share * max(1, self.writes):
            out.append(f"429s {self.limited}/{self.writes} writes (> {limited_share:.0%})")
        return out

    def late(
        self,
        *,
        lag_p90: float | None = LAG_P90,
        lag_max: float | Callable[[int], float] = LAG_MAX,
        exposure: float = EXPOSURE_MAX,
        intake: float | None = INTAKE_MAX,
    ) -> list[str]:
        """Which of issue 8's time targets the run missed, in words; [] when it met them all.

        `lag_max` may be a bound per rank (0 = the answer whose stream ended first),
        for a scope the platform cannot serve at once; `None` skips a check.
        """
        out = []
        if lag_p90 is not None and self.answers and percentile(self.lags, 0.9) > lag_p90:
            out.append(f"last token → final p90 {fmt_s(percentile(self.lags, 0.9))} > {lag_p90} s")
        if callable(lag_max):
            # The k-th quickest final against the k-th bound: the most lenient pairing,
            # so this fails only when the scope got fewer finals out than it could.
            ranked = sorted(self.answers, key=lambda s: s.final_lag if s.final_lag is not None else math.inf)
            late = [
                f"{s.key} {fmt_s(s.final_lag)} > {lag_max(rank):.1f} s"
                for rank, s in enumerate(ranked)
                if s.lag_or_inf > lag_max(rank)
            ]
            if late:
                out.append(f"finals late for their rank: {late[:5]}")
        elif self.answers and max(self.lags) > lag_max:
            out.append(f"last token → final max {self.worst(lambda s: s.lag_or_inf)} (> {lag_max} s)")
        if self.answers and max(self.exposures) > exposure:
            out.append(f"partial text up after the stream ended: {self.worst(lambda s: s.exposure)}"
                       f" (> {exposure} s)")
        follow = self.follow_up_intakes
        if intake is not None and follow and max(follow) > intake:
            slow = self.worst(lambda s: s.intake if s.follow_up else None)
            out.append(f"follow-up intake max {slow} (> {intake} s)")
        return out

    def problems(self, *, limited_share: float | None = LIMITED_SHARE, **late: Any) -> list[str]:
        """Everything that misses issue 8's targets: `wrong` and `late` together."""
        return self.wrong(limited_share=limited_share) + self.late(**late)

    def row(self, name: str, missed: list[str] | None = None) -> dict[str, str]:
        """One line of a benchmark table; `missed`, the targets missed (`problems`), if judged."""
        lags, follow = self.lags, self.follow_up_intakes
        cpu = "–" if self.cpu is None else f"{self.cpu / max(1, len(self.answers)) * 1000:.0f}"
        return {
            "run": name,
            "exact finals": f"{self.exact}/{self.total}",
            "last token → final p50 / p90 / max": " / ".join(
                fmt_s(percentile(lags, q)) for q in (0.5, 0.9, 1.0)
            ),
            "follow-up intake p50 / max": (
                f"{fmt_s(percentile(follow, 0.5))} / {fmt_s(max(follow))}" if follow else "–"
            ),
            "max partial after end": fmt_s(max(self.exposures, default=0.0)),
            "429s / writes": f"{self.limited} / {self.writes}",
            "CPU / answer ms": cpu,
        } | ({} if missed is None else {"issue 8 targets": "; ".join(missed) or "met"})


def fmt_s(value: float | None) -> str:
    if value is None or math.isinf(value):
        return "never"
    if math.isnan(value):
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1.0 else f"{value:.2f} s"


def summarize(
    asked: Sequence[Asked],
    streams: Iterable[StreamLog],
    timelines: Iterable[Timeline],
    until: float,
    *,
    limited: int,
    writes: int,
    sep: str = "",
    normalize: Normalize = exact_text,
) -> Summary:
    """Measure every asked question's answer (found by its key in the model's streams)."""
    by_key: dict[str, StreamLog] = {}
    for stream in streams:
        for question in asked:
            if question.key in stream.last_user_message.split():
                by_key[question.key] = stream  # the latest request wins (a retried one)
    texts = {key: normalize(stream.text) for key, stream in by_key.items()}
    owned, stray = claim(timelines, texts, normalize)
    answers = [
        see(q.key, by_key[q.key], owned[q.key], until, asked=q, sep=sep, normalize=normalize)
        for q in asked
        if q.key in by_key
    ]
    missing = [q.key for q in asked if q.key not in by_key]
    return Summary(answers, limited, writes, missing, len(stray))


# -------------------------------------------------------------- driving a run


def stream_of(llm: FakeLLM, key: str) -> StreamLog | None:
    """The latest model stream for the question tagged `key` (a word of its message)."""
    for stream in reversed(llm.streams):
        if key in stream.last_user_message.split():
            return stream
    return None


async def last_token(llm: FakeLLM, key: str, within: float) -> float | None:
    """When the model sent the last token of its answer to `key` (waiting up to `within` s
    for it); None if it did not in time, as when a follow-up never reached it."""

    def ended() -> bool:
        stream = stream_of(llm, key)
        return stream is not None and stream.last_token is not None

    with contextlib.suppress(AssertionError):
        await wait_until(ended, within)
    stream = stream_of(llm, key)
    return None if stream is None else stream.last_token


def all_ended(llm: FakeLLM, keys: Iterable[str]) -> float | None:
    """When the last of these questions' streams ended; None while some have not."""
    ends = [stream_of(llm, key) for key in keys]
    done = [s.last_token for s in ends if s is not None and s.last_token is not None]
    return max(done) if len(done) == len(ends) and done else None


async def settle(llm: FakeLLM, keys: Sequence[str], done: Callable[[], bool], grace: float) -> None:
    """Wait until every stream ended and `done()` (every final shown, nothing live), up to
    `grace` s after the last stream ended; then return anyway: what is missing then is
    measured as late, inexact or never asked."""
    with contextlib.suppress(AssertionError):
        await wait_until(lambda: all_ended(llm, keys), grace, interval=0.05)
    clock = llm.clock  # the streams' times are on it (tests/support/clock.py)
    ended = all_ended(llm, keys) or clock.monotonic()
    with contextlib.suppress(AssertionError):
        await wait_until(done, clock.real(max(0.0, ended + grace - clock.monotonic())), interval=0.1)
