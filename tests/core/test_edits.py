"""Edits and deletes follow the thread: the stored history takes a person's edit and drops a
deleted message; editing the question being answered, or the last one answered, has it
answered again in place (the same message, edited). End to end on the real slack-bolt and
discord.py against the fakes."""

from __future__ import annotations

import asyncio
import time

from bot.contract import ConversationKey
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack_state import Message
from tests.support.discord_fixtures import Rig, fake_discord, llm, rig, world
from tests.support.helpers import wait_until
from tests.support.slack_fixtures import ALICE, BOT, SlackRig, slack_rig

__all__ = ["fake_discord", "llm", "rig", "world"]  # fixtures used by name


def answer_to(question: str, *, slow: bool = False) -> Answer:
    """A text that names the question it answers, so a test sees which one is shown."""
    tag = question.rsplit(":", 1)[-1].strip().replace(" ", "-")
    if slow:
        return Answer.words(400, tag=tag, tokens_per_second=40)
    return Answer.words(6, tag=tag)


def conversation_of(rig: SlackRig, asked: Message) -> ConversationKey:
    return ConversationKey("slack", rig.fake.team_id, asked.channel, asked.thread_ts or asked.ts)


async def history(rig: SlackRig | Rig, conversation: ConversationKey) -> list[tuple[str, str]]:
    return [(e.role, e.content) for e in await rig.engine.conversations.load(conversation)]


async def test_slack_edit_of_the_last_question_answers_again_in_place(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.script = lambda asked: answer_to(asked)
    async with slack_rig(base_env, fake_llm) as rig:
        first = await rig.say("C1", ALICE, f"<@{BOT}> first question")
        await rig.wait_reply(first, answer_to("first question").text)
        second = await rig.say("C1", ALICE, "second question", thread_ts=first.ts)
        await rig.wait_reply(first, answer_to("first question").text + answer_to("second question").text)
        replies = rig.fake.bot_replies("C1", first.ts)
        assert len(replies) == 2

        await rig.deliver(rig.fake.edit_message(second, "second question rephrased"))
        new = answer_to("second question rephrased").text
        await rig.wait_reply(first, answer_to("first question").text + new)
        # The same message took the new answer: no new message in the thread.
        after = rig.fake.bot_replies("C1", first.ts)
        assert [m.ts for m in after] == [m.ts for m in replies] and after[1].visible == new
        assert after[1].edits >= 1
        assert fake_llm.requests[-1]["messages"][-1]["content"].endswith("second question rephrased")
        assert await history(rig, conversation_of(rig, first)) == [
            ("user", "first question"), ("assistant", answer_to("first question").text),
            ("user", "second question rephrased"), ("assistant", new),
        ]


async def test_slack_edit_of_an_earlier_message_updates_the_history_only(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.script = lambda asked: answer_to(asked)
    async with slack_rig(base_env, fake_llm) as rig:
        first = await rig.say("C1", ALICE, f"<@{BOT}> alpha")
        await rig.wait_reply(first, answer_to("alpha").text)
        second = await rig.say("C1", ALICE, "beta", thread_ts=first.ts)
        shown = answer_to("alpha").text + answer_to("beta").text
        await rig.wait_reply(first, shown)
        requests = len(fake_llm.requests)

        await rig.deliver(rig.fake.edit_message(first, f"<@{BOT}> alpha, corrected"))
        conversation = conversation_of(rig, first)
        await wait_until(lambda: rig.fake.seen_text("C1", first.ts) == shown, timeout=5)
        await wait_until_history(rig, conversation, ("user", "alpha, corrected"), at=0)
        assert len(fake_llm.requests) == requests  # not answered again
        assert (await history(rig, conversation))[2] == ("user", "beta")
        assert second.ts


async def wait_until_history(
    rig: SlackRig | Rig, conversation: ConversationKey, entry: tuple[str, str], *, at: int
) -> None:
    """Wait until the stored history has `entry` at `at` (a Redis read: the fakes cannot see it)."""
    deadline = time.monotonic() + 5
    while True:
        entries = await history(rig, conversation)
        if len(entries) > at and entries[at] == entry:
            return
        assert time.monotonic() < deadline, entries
        await asyncio.sleep(0.02)


async def test_slack_edit_of_the_question_being_answered_restarts_it_in_place(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.script = lambda asked: answer_to(asked, slow="slowly" in asked)
    async with slack_rig(base_env, fake_llm) as rig:
        asked = await rig.say("C1", ALICE, f"<@{BOT}> count slowly")
        reply: Message = await rig.fake.wait_for(
            lambda: next((m for m in rig.fake.bot_replies("C1", asked.ts) if "w5" in m.visible), None), 10
        )
        await rig.deliver(rig.fake.edit_message(asked, f"<@{BOT}> just say hi"))
        new = answer_to("just say hi").text
        await rig.wait_reply(asked, new)
        (only,) = rig.fake.bot_replies("C1", asked.ts)
        assert only.ts == reply.ts
        old_stream = fake_llm.streams[0]
        assert old_stream.sent < 400  # the old answer was cut
        expected = [("user", "just say hi"), ("assistant", new)]
        assert await history(rig, conversation_of(rig, asked)) == expected


async def test_slack_delete_removes_the_message_from_the_history(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.script = lambda asked: answer_to(asked)
    async with slack_rig(base_env, fake_llm) as rig:
        first = await rig.say("C1", ALICE, f"<@{BOT}> keep this")
        await rig.wait_reply(first, answer_to("keep this").text)
        second = await rig.say("C1", ALICE, "drop this", thread_ts=first.ts)
        await rig.wait_reply(first, answer_to("keep this").text + answer_to("drop this").text)
        conversation = conversation_of(rig, first)
        assert ("user", "drop this") in await history(rig, conversation)
        await rig.deliver(rig.fake.delete_message(second))
        await wait_until_history(rig, conversation, ("assistant", answer_to("drop this").text), at=2)
        assert ("user", "drop this") not in await history(rig, conversation)
        # The next question's request no longer carries it.
        third = await rig.say("C1", ALICE, "and now", thread_ts=first.ts)
        await rig.fake.wait_for(lambda: "and now" in fake_llm.requests[-1]["messages"][-1]["content"])
        assert all("drop this" not in m["content"] for m in fake_llm.requests[-1]["messages"])
        assert third.ts


# ---- Discord -------------------------------------------------------------------------------


async def test_discord_edit_of_the_last_question_answers_again_in_place_and_delete(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    rig.llm.script = lambda asked: answer_to(asked)
    asked = await fake.user_message(w.general, w.alice, f"{fake.bot.mention} first thing")
    await wait_until(
        lambda: rig.engine.live_answers == 0 and len(fake.bot_messages(w.general)) == 1, timeout=10
    )
    (answer,) = fake.bot_messages(w.general)
    assert answer["content"] == answer_to("first thing").text

    await fake.edit_user_message(w.general, asked, f"{fake.bot.mention} other thing")
    new = answer_to("other thing").text
    await wait_until(lambda: fake.bot_messages(w.general)[0]["content"] == new, timeout=10)
    await wait_until(lambda: rig.engine.live_answers == 0, timeout=10)
    assert [m["id"] for m in fake.bot_messages(w.general)] == [answer["id"]]
    conversation = ConversationKey("discord", w.guild.id, w.general.id, asked["id"])
    assert await history(rig, conversation) == [("user", "other thing"), ("assistant", new)]

    await fake.delete_user_message(w.general, asked)
    await wait_until_history(rig, conversation, ("assistant", new), at=0)
