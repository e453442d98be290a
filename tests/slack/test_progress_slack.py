"""Issue 26 on Slack, end to end: in a busy workspace every answer moves, in parts if need be.

Real slack-bolt, real Redis, the fake Slack enforcing Slack's limits (chat.update 50 a
minute per workspace, chat.postMessage 1 a second per channel; native streaming's
chat.startStream and chat.stopStream 20 a minute, chat.appendStream 100). Asserted here,
whatever the machine's speed: every final exact (its parts add up to the model's text, in
order), no message doubled or stray, 429s ≤ 1 % of writes, one answer per turn in history
naming every message it took, the feedback buttons on an answer's last message only and
no Stop left. How soon the text showed and moved (first text p90 ≤ 1 s, longest wait p90
≤ 3 s) is measured by `python bench/slack_bench.py --only progress`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from adapters.slack.controls import STOP_ACTION
from adapters.slack.surface import MAX_CHARS, MINUTE, UPDATE_LIMIT, UPDATE_MOST
from bot.contract import ConversationKey, HistoryEntry
from bot.contract.budgets import Window
from bot.turn import STOPPED_NOTE
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack_state import Message
from tests.support.load import SlackLoad, tagged_answers
from tests.support.measure import Summary, loose_whitespace
from tests.support.slack_fixtures import ALICE, BOT, SlackRig, slack_rig

# Answers of 3 s (60 tokens at 20 a second): long enough that edits cannot keep 20 of them
# moving, and parts are cut while the model writes.
TOKENS, RATE = 60, 20.0
SETTLE = 8.0


def controls_of(message: Message) -> set[str]:
    """The buttons a message carries: Stop, feedback."""
    found = set()
    for block in message.blocks or []:
        for element in block.get("elements") or []:
            kind = element.get("type")
            found.add("feedback" if kind == "feedback_buttons" else str(element.get("action_id")))
    return found


def refused(rig: SlackRig) -> str:
    """The 429s by method (a report's last line)."""
    counts = Counter(c.method for c in rig.fake.calls if c.status == 429)
    return "429s by method: " + (", ".join(f"{m} {n}" for m, n in counts.items()) or "none")


def report(summary: Summary) -> str:
    return "\n".join(f"{k}: {v}" for k, v in (summary.row("run") | summary.progress_row("run")).items())


async def answers_in_history(rig: SlackRig, channel: str) -> tuple[list[HistoryEntry], list[Message]]:
    """The stored answers of the conversation in `channel`, and the bot's messages in its thread."""
    (root,) = [m for m in rig.fake.messages.all() if m.channel == channel and m.thread_ts is None]
    conversation = ConversationKey("slack", rig.fake.team_id, channel, root.ts)
    stored = await rig.engine.conversations.load(conversation)
    return [e for e in stored if e.role == "assistant"], rig.fake.bot_replies(channel, root.ts)


async def check_each_conversation(rig: SlackRig, conversations: int, turns: int, *, buttons: bool) -> int:
    """History holds one answer per turn, naming the messages it took in the order shown; the
    buttons sit where they should. Returns how many answers took more than one message."""
    by_key = {s.last_user_message.split()[-1]: s.text for s in rig.llm.streams}
    in_parts = 0
    for number in range(conversations):
        answers, replies = await answers_in_history(rig, f"C{number:03d}")
        assert len(answers) == turns, f"C{number:03d}: {len(answers)} answers stored"
        assert [ts for a in answers for ts in (a.msg_id, *a.more_ids)] == [m.ts for m in replies]
        for turn, answer in enumerate(answers, start=1):
            assert answer.content == by_key[f"c{number:02d}t{turn}"]  # the whole answer, once
            messages = [m for m in replies if m.ts in (answer.msg_id, *answer.more_ids)]
            assert loose_whitespace(" ".join(m.visible for m in messages)) == loose_whitespace(answer.content)
            in_parts += len(messages) > 1
            for message in messages:
                assert STOP_ACTION not in controls_of(message)
                last = message is messages[-1]
                assert ("feedback" in controls_of(message)) == (buttons and last), message.ts
    return in_parts


async def run_20_by_2(rig: SlackRig, *, buttons: bool) -> int:
    """20 conversations × 2 turns at once; asserts what must hold whatever the machine's speed.
    Returns how many answers took more than one message."""
    rig.llm.script = tagged_answers(TOKENS, RATE)
    load = SlackLoad(
        fake=rig.fake, llm=rig.llm, deliver=rig.deliver, live_answers=lambda: rig.engine.live_answers,
        grace=SETTLE, user=ALICE.id,
    )
    summary = await load.run(20, 2)
    problems = summary.wrong()
    assert not problems, "\n".join([*problems, report(summary), refused(rig)])
    return await check_each_conversation(rig, 20, 2, buttons=buttons)


# SLACK_STREAMING, SLACK_PROGRESS
SETTINGS = {"update": ("update", "parts"), "native": ("native", "parts"), "single": ("update", "single")}


@pytest.mark.real_time
@pytest.mark.alone
@pytest.mark.parametrize("mode", list(SETTINGS))
async def test_20_conversations_2_turns_under_slack_limits(
    base_env: dict[str, str], fake_llm: FakeLLM, mode: str
) -> None:
    streaming, progress = SETTINGS[mode]
    async with slack_rig(
        base_env, fake_llm, mode="socket", SLACK_STREAMING=streaming, SLACK_PROGRESS=progress
    ) as rig:
        rig.fake.enforce_limits()
        if mode == "native":  # Tier 2 and Tier 4, as Slack documents them
            for method, limit in (("chat.startStream", 20), ("chat.stopStream", 20)):
                rig.fake.limit(method, limit, 60.0)
            rig.fake.limit("chat.appendStream", 100, 60.0)
        in_parts = await run_20_by_2(rig, buttons=mode != "native")  # native streams carry none
        if mode == "single":
            assert in_parts == 0  # one message per answer, whatever the load
        else:
            # Edits cannot move 20 answers at once (chat.update: one each 24 s): they went on in parts.
            assert in_parts >= 20
        assert not [m for m in rig.fake.messages.all() if m.streaming], "a stream left open"


# ---- one answer in parts: Stop, an edited question, a long answer --------------------------------


async def busy(rig: SlackRig, others: int = 4) -> None:
    """Other answers hold their finals in the workspace's chat.update budget (as 4 more answers
    streaming would): an edit each 60 s × 5 / 50 = 6 s, so the next answer goes on in parts."""
    updates = Window(f"slack:{rig.fake.team_id}:chat.update", UPDATE_LIMIT, MINUTE, UPDATE_MOST)
    for number in range(others):
        assert (await rig.engine.pacer.reserve((updates,), f"elsewhere{number}")).ok


async def shown_whole(rig: SlackRig, asked: Message, text: str) -> None:
    """Until the thread shows exactly `text` (in one message or several) and nothing runs."""

    def shown() -> str:
        return loose_whitespace(" ".join(m.visible for m in rig.fake.bot_replies(asked.channel, asked.ts)))

    await rig.fake.wait_for(lambda: shown() == loose_whitespace(text) and rig.engine.live_answers == 0, 20)


async def test_stop_during_an_answer_in_parts_ends_it_cleanly(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(400, tokens_per_second=40)  # 10 s
    async with slack_rig(base_env, fake_llm) as rig:
        await busy(rig)
        asked = await rig.say("C1", ALICE, f"<@{BOT}> count to 400")
        await rig.fake.wait_for(lambda: len(rig.fake.bot_replies("C1", asked.ts)) >= 3, 10)
        replies = rig.fake.bot_replies("C1", asked.ts)
        first = replies[0]
        assert STOP_ACTION in controls_of(first)  # Stop stays on the message shown first
        assert not any(controls_of(m) for m in replies[1:])
        await rig.fake.wait_ack(await rig.fake.press(first, STOP_ACTION, user=ALICE.id))
        await rig.idle()

        replies = rig.fake.bot_replies("C1", asked.ts)
        shown = " ".join(m.visible for m in replies)
        partial, _, note = shown.rpartition("\n\n")
        assert note == STOPPED_NOTE
        (answer,) = [e for e in await rig.engine.conversations.load(
            ConversationKey("slack", rig.fake.team_id, "C1", asked.ts)) if e.role == "assistant"]
        assert answer.stopped and loose_whitespace(partial) == loose_whitespace(answer.content)
        whole = fake_llm.answer.text
        assert whole.startswith(answer.content) and len(answer.content) < len(whole)
        assert [answer.msg_id, *answer.more_ids] == [m.ts for m in replies]
        assert [controls_of(m) for m in replies] == [set()] * (len(replies) - 1) + [{"feedback"}]


async def test_an_edited_question_answered_in_parts_is_answered_again_in_its_place(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.script = lambda asked: Answer.words(
        80, tag=asked.rsplit(" ", 1)[-1], tokens_per_second=20
    )  # 4 s, named after the question's last word
    async with slack_rig(base_env, fake_llm) as rig:
        await busy(rig)
        asked = await rig.say("C1", ALICE, f"<@{BOT}> say alpha")
        await shown_whole(rig, asked, Answer.words(80, tag="alpha").text)
        old = rig.fake.bot_replies("C1", asked.ts)
        assert len(old) >= 2, "the first answer was meant to take several parts"

        await rig.deliver(rig.fake.edit_message(asked, f"<@{BOT}> say beta"))
        new_text = Answer.words(80, tag="beta").text
        await shown_whole(rig, asked, new_text)
        replies = rig.fake.bot_replies("C1", asked.ts)
        assert "alpha" not in " ".join(m.visible for m in replies)  # nothing of the old answer left
        assert replies[0].ts == old[0].ts  # the new answer took the old one's place
        conversation = ConversationKey("slack", rig.fake.team_id, "C1", asked.ts)
        stored = await rig.engine.conversations.load(conversation)
        assert [(e.role, e.content) for e in stored] == [("user", "say beta"), ("assistant", new_text)]
        assert [stored[1].msg_id, *stored[1].more_ids] == [m.ts for m in replies]


async def test_a_long_answer_in_parts_also_splits_at_the_message_length_limit(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(3000, tokens_per_second=1500)  # ~17,000 characters in 2 s
    async with slack_rig(base_env, fake_llm) as rig:
        await busy(rig)
        asked = await rig.say("C1", ALICE, f"<@{BOT}> a long one")
        await shown_whole(rig, asked, fake_llm.answer.text)
        replies = rig.fake.bot_replies("C1", asked.ts)
        texts: list[Any] = [m.visible for m in replies]
        assert len(replies) >= 3 and all(len(t) <= MAX_CHARS for t in texts)
        assert " ".join(texts).split() == fake_llm.answer.text.split()
        (answer,) = [e for e in await rig.engine.conversations.load(
            ConversationKey("slack", rig.fake.team_id, "C1", asked.ts)) if e.role == "assistant"]
        assert answer.content == fake_llm.answer.text
        assert [answer.msg_id, *answer.more_ids] == [m.ts for m in replies]
        assert [controls_of(m) for m in replies][-1] == {"feedback"}
