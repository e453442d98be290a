"""Edits converge on the latest text (bot/conversations/edits.py): 50 edits of a question, one every 100 ms or
all at once (delivered in any order), leave one answer, to the last version, held once in the
history. End to end: the real slack-bolt against the fake Slack, the fake model, Redis."""

from __future__ import annotations

import asyncio
import random

from tests.core.test_edits import conversation_of, history
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack_state import Message
from tests.support.slack_fixtures import ALICE, BOT, SlackRig, slack_rig

EDITS = 50


def answer_to(question: str) -> Answer:
    """An answer that names its question's version, and takes a while (edits land mid-answer)."""
    tag = question.rsplit(" ", 1)[-1]
    return Answer.words(40, tag=tag, tokens_per_second=100)


async def settled(rig: SlackRig, asked: Message, expected: str) -> None:
    """Until the thread shows exactly `expected` with nothing running and no edit pending."""
    await rig.fake.wait_for(
        lambda: rig.fake.seen_text(asked.channel, asked.ts) == expected
        and rig.engine.live_answers == 0 and rig.engine.edits.busy == 0,
        30,
    )


async def check_one_answer_to_the_last(rig: SlackRig, asked: Message, fake_llm: FakeLLM) -> None:
    last = f"<@{BOT}> question v{EDITS}"
    expected = answer_to(last).text
    await settled(rig, asked, expected)
    [only] = rig.fake.bot_replies(asked.channel, asked.ts)
    assert only.visible == expected
    assert asked.text == last  # what the message reads now
    assert await history(rig, conversation_of(rig, asked)) == [
        ("user", f"question v{EDITS}"), ("assistant", expected),
    ]
    assert fake_llm.requests[-1]["messages"][-1]["content"].endswith(f"question v{EDITS}")


async def test_fifty_edits_100_ms_apart_while_answered_leave_one_answer_to_the_last(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.script = answer_to
    async with slack_rig(base_env, fake_llm) as rig:
        asked = await rig.say("C1", ALICE, f"<@{BOT}> question v0")
        await rig.fake.wait_for(lambda: rig.fake.bot_replies("C1", asked.ts), 10)  # being answered
        for version in range(1, EDITS + 1):
            await rig.deliver(rig.fake.edit_message(asked, f"<@{BOT}> question v{version}"))
            await fake_llm.clock.sleep(0.1)  # a person's pace of editing, not a wait for the bot
        await check_one_answer_to_the_last(rig, asked, fake_llm)
        assert len(fake_llm.requests) < EDITS  # coalesced: not one answer per edit


async def test_fifty_edits_at_once_in_any_order_leave_one_answer_to_the_last(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.script = answer_to
    async with slack_rig(base_env, fake_llm) as rig:
        asked = await rig.say("C1", ALICE, f"<@{BOT}> question v0")
        await settled(rig, asked, answer_to(f"<@{BOT}> question v0").text)
        events = [rig.fake.edit_message(asked, f"<@{BOT}> question v{v}") for v in range(1, EDITS + 1)]
        random.Random(24).shuffle(events)  # the last edit need not arrive last
        assert events[-1]["message"]["text"] != asked.text
        await asyncio.gather(*(rig.deliver(event) for event in events))
        await check_one_answer_to_the_last(rig, asked, fake_llm)
        assert len(fake_llm.requests) <= 3  # the first answer, then the coalesced edits
