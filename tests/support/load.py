"""Many people asking at once, over the fakes: the drivers of the pacing tests and benches.

Each question carries a key (`c07t2`: conversation 7, turn 2; a run label may go
in front) that the fake model tags its answer with (`tagged_answers`), so
`tests/support/measure.py` tells every message apart by its text. A conversation's next
turn is sent `FOLLOW_UP_AFTER` seconds after the model sent the last token of
the answer before it, as a person who reads fast. Waiting on the scenario's
schedule is the only sleeping done here; everything else waits on conditions.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_payloads import Channel, User
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack import FakeSlack
from tests.support.measure import LAG_MAX, Asked, Summary, last_token, loose_whitespace, settle, summarize

FOLLOW_UP_AFTER = 1.0  # s after the answer's last token
KEY = re.compile(r"\b[a-z]*c\d+t\d+\b")
SLACK_WRITES = frozenset(
    {
        "chat.postMessage",
        "chat.update",
        "chat.delete",
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
    }
)
DISCORD_MESSAGE_ROUTES = frozenset(
    {"/channels/{channel_id}/messages", "/channels/{channel_id}/messages/{message_id}"}
)

Deliver = Callable[[dict[str, Any]], Awaitable[None]]


def tagged_answers(tokens: int, rate: float) -> Callable[[str], Answer]:
    """For `FakeLLM.script`: `tokens` tokens at `rate` per second, tagged with the question's key."""

    def answer(asked: str) -> Answer:
        match = KEY.search(asked)
        return Answer.tagged(tokens, match.group(0) if match else "untagged", tokens_per_second=rate)

    return answer


@dataclass(repr=False, kw_only=True)  # repr: kept out of assertion messages
class Load:
    """What both platforms' drivers share: the questions asked, the schedule, the settling."""

    llm: FakeLLM
    live_answers: Callable[[], int]  # answers running in the bot(s); lambda: 0 if unknown
    grace: float  # s after the last stream ended before a run is measured as it stands
    label: str = ""  # in front of every key, to tell runs on one fake model apart
    asked: list[Asked] = field(default_factory=list)
    started: float = 0.0  # set in __post_init__, on the model's clock

    def key(self, number: int, turn: int) -> str:
        return f"{self.label}c{number:02d}t{turn}"

    async def next_turn(self, number: int, turn: int) -> bool:
        """Wait until the person would write turn `turn`; False if the turn before never ended."""
        ended = await last_token(self.llm, self.key(number, turn - 1), within=self.grace)
        if ended is None:
            return False  # never answered: the summary reports it
        # The person reads the answer and writes again: the scenario's schedule.
        await self.llm.clock.sleep(max(0.0, ended + FOLLOW_UP_AFTER - self.llm.clock.monotonic()))
        return True

    async def settle(self) -> Summary:
        keys = [a.key for a in self.asked]
        await settle(
            self.llm,
            keys,
            lambda: self.live_answers() == 0 and self.summary().exact == len(keys),
            self.grace,
        )
        return self.summary()

    def summary(self) -> Summary:
        raise NotImplementedError


@dataclass(repr=False, kw_only=True)
class SlackLoad(Load):
    fake: FakeSlack
    deliver: Deliver | None = None  # one event to the app (Socket Mode or a replica's URL)
    user: str = "U0ALICE"
    calls_from: int = 0  # calls before this run are not counted

    def __post_init__(self) -> None:
        self.calls_from = len(self.fake.calls)
        self.started = self.llm.clock.monotonic()

    async def ask(self, channel: str, key: str, *, thread_ts: str | None = None) -> str:
        """A person writes; Slack sends its events. Returns the message's ts."""
        # In a thread the bot is part of, a person follows up without mentioning it.
        bot = self.fake.bot_user_id
        text = f"<@{bot}> question {key}" if thread_ts is None else f"follow-up {key}"
        message = self.fake.user_message(channel, self.user, text, thread_ts=thread_ts)
        self.asked.append(Asked(key, self.llm.clock.monotonic(), follow_up=thread_ts is not None))
        assert self.deliver is not None
        for event in self.fake.events_for(message):
            await self.deliver(event)
        return message.ts

    async def conversation(self, channel: str, number: int, turns: int, start: float = 0.0) -> None:
        if start:
            await self.llm.clock.sleep(start)  # the scenario's schedule, not a wait for the bot
        root = await self.ask(channel, self.key(number, 1))
        for turn in range(2, turns + 1):
            if not await self.next_turn(number, turn):
                return
            await self.ask(channel, self.key(number, turn), thread_ts=root)

    async def run(
        self,
        conversations: int,
        turns: int,
        *,
        channel: Callable[[int], str] = lambda n: f"C{n:03d}",
        stagger: float = 0.0,
    ) -> Summary:
        """Run the conversations, wait for their finals (up to `grace`), measure."""
        await asyncio.gather(
            *(self.conversation(channel(n), n, turns, start=n * stagger) for n in range(conversations))
        )
        return await self.settle()

    def summary(self) -> Summary:
        calls = self.fake.calls[self.calls_from :]
        return summarize(
            self.asked,
            self.llm.streams,
            [t for t in self.fake.timelines.values() if t.shown and t.shown[0].at >= self.started],
            self.llm.clock.monotonic(),
            limited=sum(1 for c in calls if c.status == 429),
            writes=sum(1 for c in calls if c.method in SLACK_WRITES),
            # Exact up to where the whitespace falls between messages: an answer may go on
            # in a new message ("the rest") as well as be edited or posted whole.
            sep="\n",
            normalize=loose_whitespace,
        )


@dataclass(repr=False, kw_only=True)
class DiscordLoad(Load):
    fake: FakeDiscord
    calls_from: int = 0

    def __post_init__(self) -> None:
        self.calls_from = len(self.fake.calls)
        self.started = self.llm.clock.monotonic()

    def one_channel_lag(self) -> Callable[[int], float]:
        """Issue 8's bound on the k-th final (quickest first) of answers ending together in one
        channel: the channel takes `creates` new messages per window, so the k-th may wait for
        the k // creates-th window after this one."""
        limits = self.fake.limiter.limits
        return lambda rank: LAG_MAX + limits.per_channel_seconds * (rank // limits.creates)

    async def ask(self, channel: Channel, person: User, key: str, *, mention: bool) -> None:
        text = f"{self.fake.bot.mention} question {key}" if mention else f"question {key}"
        self.asked.append(Asked(key, self.llm.clock.monotonic(), follow_up=not key.endswith("t1")))
        await self.fake.user_message(channel, person, text)

    async def dm_conversation(self, person: User, number: int, turns: int) -> None:
        """A DM is one rolling conversation: each turn is the person's next message."""
        dm = self.fake.dm_channel(person)
        await self.ask(dm, person, self.key(number, 1), mention=False)
        for turn in range(2, turns + 1):
            if not await self.next_turn(number, turn):
                return
            await self.ask(dm, person, self.key(number, turn), mention=False)

    async def mention_conversation(self, channel: Channel, person: User, number: int, turns: int) -> None:
        """A person mentions the bot in a channel, and again once each answer is read."""
        await self.ask(channel, person, self.key(number, 1), mention=True)
        for turn in range(2, turns + 1):
            if not await self.next_turn(number, turn):
                return
            await self.ask(channel, person, self.key(number, turn), mention=True)

    def summary(self) -> Summary:
        calls = self.fake.calls[self.calls_from :]
        writes = [c for c in calls if c.route in DISCORD_MESSAGE_ROUTES and c.method != "GET"]
        return summarize(
            self.asked,
            self.llm.streams,
            [t for t in self.fake.timelines.values() if t.shown and t.shown[0].at >= self.started],
            self.llm.clock.monotonic(),
            limited=sum(1 for c in calls if c.status == 429),
            writes=len(writes),
            # Parts may split at a newline where the model's text has a space.
            sep="\n",
            normalize=loose_whitespace,
        )
