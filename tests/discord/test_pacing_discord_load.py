"""Issue 8 on Discord, end to end: under load every final text is exact and lands at once.

Real discord.py against the fake Discord with its limits on (5 message creates and
5 edits per 5 s per channel, 50 requests per second for the bot), real Redis, the
fake model. Answers are short (20 tokens at 100 tokens/s) so a run takes seconds.
Judged from outside, as on Slack (`tests/support/measure.py`, `Summary.wrong`): every
question reaches the model, every final is exact, nothing doubled or stray, 429s ≤ 1%
of writes. Issue 8's time targets for these runs are measured by
`python bench/discord_bench.py`, not asserted on a shared CI machine.

Ten answers ending together in one channel need more writes than the channel takes
in 3 s (5 creates per 5 s), so there issue 8 asks that finals go first, in order: the
k-th final may wait for the channel's k // 5-th next window. That order is asserted,
as time with a margin of seconds per rank.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.fakes.discord import FakeDiscord
from tests.support.discord_fixtures import Rig, fake_discord, llm, rig, world
from tests.support.load import DiscordLoad, tagged_answers
from tests.support.measure import Summary

# The wall clock: on a faster one the bot's real work would count several times over
# against the platforms' windows (tests/support/clock.py).
pytestmark = pytest.mark.real_time

__all__ = ["fake_discord", "llm", "rig", "world"]  # fixtures used by name

TOKENS, RATE = 20, 100.0  # 0.2 s answers
SETTLE = 8.0  # s after the last stream ended before the run is measured as it stands



def load_on(rig: Rig) -> DiscordLoad:
    return DiscordLoad(
        fake=rig.fake, llm=rig.llm, live_answers=lambda: rig.engine.live_answers, grace=SETTLE
    )


def report(summary: Summary, fake: FakeDiscord) -> str:
    limited = Counter(f"{c.method} {c.route}" for c in fake.calls if c.status == 429)
    lines = [f"{k}: {v}" for k, v in summary.row("this run").items()]
    return "\n".join([*lines, f"429s by route: {dict(limited)}"])


async def test_5_dms_2_turns_a_control(rig: Rig) -> None:
    """A control: at light load every answer is judged right, so the load tests below
    fail for the load, not for the way they judge."""
    rig.llm.script = tagged_answers(TOKENS, RATE)
    people = [rig.fake.add_user(f"person{n:02d}", guild=rig.world.guild) for n in range(5)]
    load = load_on(rig)
    await asyncio.gather(*(load.dm_conversation(person, n, 2) for n, person in enumerate(people)))
    summary = await load.settle()
    problems = summary.wrong()
    assert not problems, "\n".join([*problems, report(summary, rig.fake)])


@pytest.mark.alone  # holds the cores: its 429 count depends on when requests arrive
async def test_50_dms_2_turns(rig: Rig) -> None:
    rig.llm.script = tagged_answers(TOKENS, RATE)
    people = [rig.fake.add_user(f"person{n:02d}", guild=rig.world.guild) for n in range(50)]
    load = load_on(rig)
    await asyncio.gather(*(load.dm_conversation(person, n, 2) for n, person in enumerate(people)))
    summary = await load.settle()
    problems = summary.wrong()
    assert not problems, "\n".join([*problems, report(summary, rig.fake)])


# Not `long` (started first): its finals are judged against the channel's windows plus issue
# 8's 3 s, and the run's first seconds, every worker importing and collecting the suite, are
# the busiest of all (it missed once in five runs there).
async def test_10_answers_at_once_in_one_channel(rig: Rig) -> None:
    rig.llm.script = tagged_answers(TOKENS, RATE)
    load = load_on(rig)
    general, alice = rig.world.general, rig.world.alice
    await asyncio.gather(*(load.ask(general, alice, f"c{n:02d}t1", mention=True) for n in range(10)))
    summary = await load.settle()
    problems = summary.wrong() + summary.late(lag_p90=None, lag_max=load.one_channel_lag())
    assert not problems, "\n".join([*problems, report(summary, rig.fake)])
