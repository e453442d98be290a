"""Summaries on Slack, end to end with the real slack-bolt against the fake Slack: the
"Summarize thread" shortcut (in the thread, streamed, with Stop) and `/summarize [WINDOW]` (the
channel's window with its threads' replies, for the asker only); pagination, a 429 mid-way, a
thread deleted mid-read, permalinks."""

from __future__ import annotations

import time

from adapters.slack.controls import STOP_ACTION
from adapters.slack.summaries import GONE_MESSAGE, SHORTCUT
from bot.model.prompt import estimate_tokens
from bot.ops import metrics
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack import permalink
from tests.fakes.slack_state import Message
from tests.support.slack_fixtures import ALICE, BOB, SlackRig, slack_rig
from tests.support.summaries import every_request, model_citing

SMALL = {"BOT_CONTEXT_TOKENS": "2000", "BOT_MAX_TOKENS": "300"}  # 1,700 tokens a request


def long_thread(rig: SlackRig, channel: str, replies: int) -> Message:
    """A thread already in the channel: a parent and `replies` replies of ~40 tokens each."""
    parent = rig.fake.user_message(channel, ALICE.id, "incident: the database is down")
    for i in range(1, replies + 1):
        who = ALICE if i % 2 else BOB
        text = f"update-{i} " + "checking the replicas " * 5
        rig.fake.user_message(channel, who.id, text, thread_ts=parent.ts)
    return parent


def summaries_counted(kind: str, outcome: str) -> float | None:
    return metrics.current().registry.get_sample_value(
        "chatbot_summaries_total", {"platform": "slack", "kind": kind, "outcome": outcome}
    )


async def test_the_shortcut_summarises_a_thread_longer_than_the_budget_in_the_thread(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    metrics.reset()
    fake_llm.script = model_citing(" [9999]")  # the combined summary also cites a message never given
    async with slack_rig(base_env, fake_llm, **SMALL) as rig:
        parent = long_thread(rig, "C1", 400)
        chosen, last = rig.fake.thread("C1", parent.ts)[57], rig.fake.thread("C1", parent.ts)[-1]
        await rig.fake.wait_ack(await rig.fake.push_shortcut(SHORTCUT, chosen, user=BOB.id))
        await rig.fake.wait_for(lambda: summaries_counted("thread", "ok"), 20)

        # All 401 messages were read (three pages of conversations.replies), each reached some
        # request, and none was over the budget.
        assert len(rig.fake.calls_to("conversations.replies")) == 3
        assert all(f"update-{i} " in every_request(fake_llm) for i in range(1, 401))
        assert "incident: the database is down" in every_request(fake_llm)
        assert len(fake_llm.requests) > 3
        for request in fake_llm.requests:
            assert sum(estimate_tokens(m["content"]) for m in request["messages"]) <= 1700
        # Posted in the thread, citations as permalinks, the made-up one gone.
        (summary,) = rig.fake.bot_replies("C1", parent.ts)
        assert permalink("C1", parent.ts) in summary.visible  # message [1]: the parent
        assert permalink("C1", last.ts) in summary.visible
        assert "9999" not in summary.visible
        assert len(rig.fake.calls_to("chat.getPermalink")) == 2  # the cited messages only
        # Neither Stop (it is finished) nor 👍/👎 (a summary is no answer the thread keeps).
        assert not [e for b in summary.blocks or [] for e in b.get("elements") or [] if e.get("action_id")]


async def test_summarize_reads_a_channel_window_with_thread_replies_for_the_asker_only(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.script = model_citing()
    async with slack_rig(base_env, fake_llm) as rig:
        hours_ago = time.time() - 3 * 3600
        rig.fake.user_message("C1", BOB.id, "old-news from this morning", ts=f"{hours_ago:.6f}")
        fresh = rig.fake.user_message("C1", ALICE.id, "fresh-topic: shall we ship friday?")
        rig.fake.user_message("C1", BOB.id, "reply-yes in the thread", thread_ts=fresh.ts)
        rig.fake.user_message("C2", BOB.id, "another-channel chatter")
        body = await rig.command("2h", user=ALICE, channel="C1", command="/summarize")
        await rig.idle()

        given = every_request(fake_llm)
        assert "fresh-topic" in given and "reply-yes in the thread" in given
        assert "old-news" not in given and "another-channel" not in given
        # Shown to Alice only: through the command's response_url, nothing posted in the channel.
        assert rig.fake.calls_to("chat.postMessage") == []
        final = rig.fake.responses[-1].body
        assert final["response_type"] == "ephemeral"
        assert permalink("C1", fresh.ts) in final["text"]
        assert body["response_type"] == "ephemeral"
        assert len(rig.fake.responses) <= 5  # Slack takes five posts to a response_url


async def test_summarize_pages_through_history_and_waits_out_a_429(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.script = model_citing()
    async with slack_rig(base_env, fake_llm) as rig:
        for i in range(450):
            rig.fake.user_message("C1", ALICE.id, f"note-{i}")
        rig.fake.fail_next("conversations.history", "ratelimited", retry_after=1, after=1)
        await rig.command("", user=ALICE, channel="C1", command="/summarize")
        await rig.idle(20)

        calls = rig.fake.calls_to("conversations.history")
        assert [c.status for c in calls] == [200, 429, 200, 200]  # the refused page asked again
        assert calls[2].params["cursor"] == calls[1].params["cursor"]
        assert calls[2].at - calls[1].at >= 1.0  # after its Retry-After
        assert all(f"note-{i}\n" in every_request(fake_llm) + "\n" for i in range(450))


async def test_a_thread_deleted_mid_read_is_said_to_the_asker_alone(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    metrics.reset()
    async with slack_rig(base_env, fake_llm) as rig:
        parent = long_thread(rig, "C1", 300)
        rig.fake.fail_next("conversations.replies", "ratelimited", retry_after=1, after=1)
        await rig.fake.wait_ack(await rig.fake.push_shortcut(SHORTCUT, parent, user=ALICE.id))
        replies = lambda: rig.fake.calls_to("conversations.replies")  # noqa: E731
        await rig.fake.wait_for(lambda: any(c.status == 429 for c in replies()))
        for message in rig.fake.thread("C1", parent.ts):  # deleted while the bot waits
            rig.fake.messages.delete("C1", message.ts)
        await rig.fake.wait_for(lambda: summaries_counted("thread", "error"), 10)

        assert rig.fake.responses[-1].body["text"] == GONE_MESSAGE
        assert rig.fake.calls_to("chat.postMessage") == []
        assert fake_llm.requests == []


async def test_stop_during_a_thread_summary_keeps_what_was_written(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    metrics.reset()
    fake_llm.answer = Answer.words(400, tokens_per_second=40)
    async with slack_rig(base_env, fake_llm) as rig:
        parent = long_thread(rig, "C1", 5)
        await rig.fake.wait_ack(await rig.fake.push_shortcut(SHORTCUT, parent, user=ALICE.id))
        reply = await rig.fake.wait_for(lambda: next((
            m for m in rig.fake.bot_replies("C1", parent.ts)
            if " w5" in m.visible and any(
                e.get("action_id") == STOP_ACTION for b in m.blocks or [] for e in b.get("elements") or [])
        ), None), 10)
        await rig.fake.wait_ack(await rig.fake.press(reply, STOP_ACTION, user=ALICE.id))
        await rig.fake.wait_for(lambda: summaries_counted("thread", "stopped"), 10)

        final = rig.fake.seen_text("C1", parent.ts)
        assert final.endswith("_(stopped)_") and "w400" not in final
        await rig.fake.wait_for(lambda: fake_llm.streams[-1].gone, 5)


async def test_a_window_it_does_not_know_is_explained(base_env: dict[str, str], fake_llm: FakeLLM) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        body = await rig.command("yesterday", user=ALICE, channel="C1", command="/summarize")
        assert "`2h`, `24h` (the default), `7d` or `since monday`" in body["text"]
        assert fake_llm.requests == [] and rig.fake.calls_to("conversations.history") == []


async def test_an_empty_window_says_so(base_env: dict[str, str], fake_llm: FakeLLM) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        body = await rig.command("2h", user=ALICE, channel="C9", command="/summarize")
        assert body["text"] == "There are no messages to summarise in the last 2 hours."
        assert fake_llm.requests == []
