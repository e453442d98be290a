"""Issue 8 on Slack, end to end: under load every final text is exact and lands at once.

Real slack-bolt (Socket Mode, or HTTP with three replicas), real Redis, the fake
Slack enforcing Slack's limits (chat.update 50 per 60 s per workspace,
chat.postMessage 1 per s per channel). Time is scaled down, the limits are not:
answers are short (20 tokens at 100 tokens/s) so a run takes seconds, and a
minute's update budget is still a minute's.

Everything is judged from outside (`tests/support/measure.py`): what the fake Slack
showed and when, and when the fake model sent each answer's last token. Each
conversation's questions carry a key (`c07t2`: conversation 7, turn 2) that
the fake model tags its answer with, so every message is told apart by text.
Asserted here, whatever the machine's speed (`Summary.wrong`): every question reaches
the model, every final text is exact (within SETTLE s of the last stream's end), no
message is doubled or stray, 429s ≤ 1% of writes. Issue 8's time targets (last token
→ final ≤ 1 s at p90 and ≤ 3 s at worst; no partial text up > 3 s after its stream
ended; a follow-up reaches the model within 0.5 s) are measured, on the same runs, by
`python bench/slack_bench.py`: a timing asserted on a shared 2-core CI machine fails
for the machine, not the bot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import pytest

from adapters.slack import SlackAdapter
from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.engine import Engine
from tests.fakes.llm import FakeLLM
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_events import SignedSender
from tests.support.load import SlackLoad, tagged_answers
from tests.support.measure import Summary
from tests.support.slack_fixtures import ALICE, SECRET, SlackRig, slack_env, slack_rig

# The wall clock: on a faster one the bot's real work would count several times over
# against the platforms' windows (tests/support/clock.py).
pytestmark = pytest.mark.real_time

TOKENS, RATE = 20, 100.0  # 0.2 s answers
# After the last stream ended, how long the finals may take before the run is
# measured as it stands (a final still missing then counts as late, its partial
# text as exposed): well past the 3 s target, well inside pytest's 60 s.
SETTLE = 8.0
# The runs of 30 and more conversations keep the cores busy: under pytest-xdist they run while
# no other test does (see `cores` in conftest.py). Their 429 count depends on when requests
# arrive, and on a machine shared with other tests they would arrive late and bunched.
ALONE = pytest.mark.alone


def load_on(rig: SlackRig) -> SlackLoad:
    return SlackLoad(
        fake=rig.fake,
        llm=rig.llm,
        deliver=rig.deliver,
        live_answers=lambda: rig.engine.live_answers,
        grace=SETTLE,
        user=ALICE.id,
    )


def report(summary: Summary) -> str:
    return "\n".join(f"{k}: {v}" for k, v in summary.row("this run").items())


# --------------------------------------------------------------------- scenarios


async def test_5_conversations_2_turns_a_control(base_env: dict[str, str], fake_llm: FakeLLM) -> None:
    """A control: at light load every answer is judged right, so the load tests below
    fail for the load, not for the way they judge."""
    fake_llm.script = tagged_answers(TOKENS, RATE)
    async with slack_rig(base_env, fake_llm, mode="socket") as rig:
        rig.fake.enforce_limits()
        load = load_on(rig)
        summary = await load.run(5, 2)
        problems = summary.wrong()
        assert not problems, "\n".join([*problems, report(summary)])


@ALONE
async def test_50_conversations_2_turns_under_slack_limits(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.script = tagged_answers(TOKENS, RATE)
    async with slack_rig(base_env, fake_llm, mode="socket") as rig:
        rig.fake.enforce_limits()
        load = load_on(rig)
        summary = await load.run(50, 2)
        problems = summary.wrong()
        assert not problems, "\n".join([*problems, report(summary)])


@ALONE
async def test_50_conversations_2_turns_over_3_http_replicas(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.script = tagged_answers(TOKENS, RATE)
    async with FakeSlack() as fake, replicas(base_env, fake, fake_llm, 3) as bots:
        fake.enforce_limits()  # one workspace: the three replicas share its budget
        load = SlackLoad(
            fake=fake,
            llm=fake_llm,
            deliver=bots.deliver,
            live_answers=bots.live_answers,
            grace=SETTLE,
            user=ALICE.id,
        )
        summary = await load.run(50, 2)
        problems = summary.wrong()
        assert not problems, "\n".join([*problems, report(summary)])


@pytest.mark.long
async def test_20_conversations_2_turns_without_limits(base_env: dict[str, str], fake_llm: FakeLLM) -> None:
    # Slack takes every write here; the bot's own pacing is what is tested. Answers are
    # 3 s long (not 0.2 s) so progress edits take their share of the update budget
    # during the first turns, as 10 s answers do in production.
    fake_llm.script = tagged_answers(30, 10.0)
    async with slack_rig(base_env, fake_llm, mode="socket") as rig:
        load = load_on(rig)
        summary = await load.run(20, 2)
        assert rig.fake.calls_to("chat.update"), "the answers were meant to show progress"
        problems = summary.wrong()
        assert not problems, "\n".join([*problems, report(summary)])


@pytest.mark.long
async def test_429_storm_on_one_channel_still_lands_every_final(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    # Slack refuses most edits in one channel (3 per 10 s, Retry-After up to 10 s): a
    # final edit refused must not wait that out, nor leave its message half-written.
    # Questions 2 s apart, 3 s answers: progress edits run into the limit.
    fake_llm.script = tagged_answers(30, 10.0)
    async with slack_rig(base_env, fake_llm, mode="socket") as rig:
        rig.fake.enforce_limits()
        rig.fake.limit("chat.update", 3, 10.0, scope="channel")
        load = load_on(rig)
        summary = await load.run(5, 1, channel=lambda _n: "CSTORM", stagger=2.0)
        assert [c for c in rig.fake.calls_to("chat.update") if c.status == 429], "no storm happened"
        problems = summary.wrong(limited_share=None)
        assert not problems, "\n".join([*problems, report(summary)])


@ALONE
@pytest.mark.parametrize(
    "tier_2", [("chat.stopStream",), ("chat.startStream", "chat.stopStream")], ids=["stop", "start+stop"]
)
async def test_native_streaming_under_its_tier_2_budget(
    base_env: dict[str, str], fake_llm: FakeLLM, tier_2: tuple[str, ...]
) -> None:
    # chat.stopStream (and chat.startStream) are Tier 2, about 20 a minute per workspace:
    # 60 answers cannot all stream. A stream left open shows as still being written, so an
    # answer whose stop cannot be afforded must end as a plain final message instead.
    # "stop" limits the stop alone, the case issue 8 names; "start+stop" both, as Slack does.
    fake_llm.script = tagged_answers(TOKENS, RATE)
    async with slack_rig(base_env, fake_llm, mode="socket", SLACK_STREAMING="native") as rig:
        rig.fake.enforce_limits()
        for method in tier_2:
            rig.fake.limit(method, 20, 60.0)
        rig.fake.limit("chat.appendStream", 100, 60.0)  # Tier 4
        load = load_on(rig)
        summary = await load.run(30, 2)
        problems = summary.wrong()
        assert not problems, "\n".join([*problems, report(summary)])


# ------------------------------------------------------------------- replicas


@dataclass
class Replicas:
    fake: FakeSlack
    engines: list[Engine] = field(default_factory=list)
    senders: list[SignedSender] = field(default_factory=list)
    _turn: count[int] = field(default_factory=count)

    async def deliver(self, event: dict[str, Any]) -> None:
        """Round robin, as a load balancer would: the two events of one mention (app_mention
        and message) may reach different replicas."""
        sender = self.senders[next(self._turn) % len(self.senders)]
        reply = await sender.send_event(self.fake.callback(event))
        assert reply.status == 200, reply

    def live_answers(self) -> int:
        return sum(engine.live_answers for engine in self.engines)


@asynccontextmanager
async def replicas(
    base_env: dict[str, str], fake: FakeSlack, llm: FakeLLM, count_: int
) -> AsyncIterator[Replicas]:
    """`count_` bots in HTTP mode on one Redis prefix, as the shipped Kubernetes layout runs
    them. Each has its own engine, Slack client and adapter, as separate processes would;
    only module-level state is shared, which separate processes would not share (the
    bench runs real processes)."""
    env = slack_env(
        base_env | {"TOGETHER_BASE_URL": llm.url, "LLM_RETRY_BASE_DELAY": "0.01"}, fake, "http"
    )
    settings = load_settings(env, dotenv=False)
    settings = dataclasses.replace(settings, slack=dataclasses.replace(settings.slack, port=0))
    fake.add_user(dataclasses.replace(ALICE))
    bots = Replicas(fake)
    async with AsyncExitStack() as stack:
        for _ in range(count_):
            engine = await stack.enter_async_context(open_engine(settings))
            adapter = SlackAdapter(settings, engine)
            await adapter.start()
            stack.push_async_callback(adapter.stop)
            stack.push_async_callback(engine.drain, 5)
            sender = SignedSender(f"http://127.0.0.1:{adapter.port}/slack/events", SECRET)
            stack.push_async_callback(sender.close)
            bots.engines.append(engine)
            bots.senders.append(sender)
        yield bots
