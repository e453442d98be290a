"""Slack end to end: mentions, threads, DMs — real slack-bolt, fake Slack, fake model, real Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as redis

from bot.contract import ConversationKey
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack import FakeSlack
from tests.support.helpers import wait_until
from tests.support.slack_fixtures import ALICE, BOB, BOT, slack_rig


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_mention_is_answered_in_its_thread_streamed(
    base_env: dict[str, str], fake_llm: FakeLLM, mode: str
) -> None:
    fake_llm.answer = Answer.words(40, tokens_per_second=20)
    async with slack_rig(base_env, fake_llm, mode=mode) as rig:
        msg = await rig.say("C1", ALICE, f"<@{BOT}> how do I rotate a key, <@{BOB.id}>?")
        await rig.wait_reply(msg, fake_llm.answer.text)

        writes = rig.fake.writes()
        assert writes[0].method == "chat.postMessage"
        assert len(writes) >= 3  # posted at the first token, edited as it grew, then the final
        assert all(w.ok for w in writes)
        assert writes[0].params["thread_ts"] == msg.ts
        assert writes[-1].markdown == fake_llm.answer.text
        # Ack first: Slack had its acknowledgement before the model was even asked.
        if mode == "socket":
            assert min(a.at for a in rig.fake.acks.values()) < fake_llm.request_times[0]
            # SLACK_API_URL applies to apps.connections.open too.
            assert rig.fake.connections_opened == 1
        messages = fake_llm.requests[0]["messages"]
        # The bot's mention is gone, another person's mention is their display name.
        assert messages[-1] == {"role": "user", "content": "Alice: how do I rotate a key, @Bob?"}
        # One visible text per thread: the answer is one message, not several.
        assert len(rig.fake.bot_replies("C1", msg.ts)) == 1


async def test_follow_up_in_thread_needs_no_mention_and_carries_history(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        fake_llm.answer = Answer.of("Use the rotate command.")
        first = await rig.say("C1", ALICE, f"<@{BOT}> how do I rotate a key?")
        await rig.wait_reply(first, "Use the rotate command.")

        fake_llm.answer = Answer.of("Every 90 days.")
        await rig.say("C1", BOB, "and how often?", thread_ts=first.ts)
        await rig.wait_reply(first, "Use the rotate command.Every 90 days.")

        messages = fake_llm.requests[1]["messages"]
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
        assert messages[1]["content"] == "Alice: how do I rotate a key?"
        assert messages[2]["content"] == "Use the rotate command."
        assert messages[3]["content"] == "Bob: and how often?"


async def test_thread_reply_to_someone_else_is_not_answered(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        fake_llm.answer = Answer.of("Hello.")
        first = await rig.say("C1", ALICE, f"<@{BOT}> hi")
        await rig.wait_reply(first, "Hello.")

        await rig.say("C1", ALICE, f"<@{BOB.id}> can you check this?", thread_ts=first.ts)
        thread = ConversationKey("slack", rig.fake.team_id, "C1", first.ts)

        async def noted() -> bool:
            return (await rig.engine.conversations.load(thread))[-1].author == "Alice"

        await wait_until(noted)
        fake_llm.answer = Answer.of("Sure.")
        await rig.say("C1", BOB, "what did you mean?", thread_ts=first.ts)
        await rig.wait_reply(first, "Hello.Sure.")
        assert len(fake_llm.requests) == 2  # the reply to Bob was not answered…
        contents = [m["content"] for m in fake_llm.requests[1]["messages"][1:]]
        assert contents == [  # …but it is context for the next answer
            "Alice: hi", "Hello.", "Alice: @Bob can you check this?", "Bob: what did you mean?"
        ]


async def test_channel_message_without_mention_is_ignored(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        quiet = await rig.say("C1", ALICE, "just chatting")
        fake_llm.answer = Answer.of("Hi.")
        asked = await rig.say("C1", ALICE, f"<@{BOT}> hi")
        await rig.wait_reply(asked, "Hi.")
        assert rig.fake.bot_replies("C1", quiet.ts) == []
        assert len(fake_llm.requests) == 1


async def test_mid_thread_mention_imports_the_earlier_thread(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        # Written before the bot takes part: in the thread, but no events the bot must weigh
        # (a handler still deciding on Bob's message when the answer below lands would see
        # the bot in the thread, a race this test is not about).
        root = rig.fake.user_message("C1", ALICE.id, "We deploy on Fridays &amp; hope for the best")
        rig.fake.user_message("C1", BOB.id, "Is that wise?", thread_ts=root.ts)
        fake_llm.answer = Answer.of("Not really.")
        ask = await rig.say("C1", ALICE, f"<@{BOT}> what do you think?", thread_ts=root.ts)
        await rig.wait_reply(ask, "Not really.")

        messages = fake_llm.requests[0]["messages"]
        assert messages[1:] == [
            {"role": "user", "content": "Alice: We deploy on Fridays & hope for the best"},
            {"role": "user", "content": "Bob: Is that wise?"},
            {"role": "user", "content": "Alice: what do you think?"},
        ]


async def test_thread_lost_from_redis_is_rebuilt_from_slack(
    base_env: dict[str, str],
    fake_llm: FakeLLM,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        fake_llm.answer = Answer.of("First answer.")
        first = await rig.say("C1", ALICE, f"<@{BOT}> first question")
        await rig.wait_reply(first, "First answer.")
        # Redis forgets (TTL passed, flushed): only this test's keys.
        keys = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}:conv:*")]
        assert keys
        await redis_client.delete(*keys)

        fake_llm.answer = Answer.of("Second answer.")
        await rig.say("C1", BOB, "follow-up without a mention", thread_ts=first.ts)
        await rig.wait_reply(first, "First answer.Second answer.")
        messages = fake_llm.requests[1]["messages"]
        assert messages[1:] == [
            {"role": "user", "content": "Alice: first question"},
            {"role": "assistant", "content": "First answer."},
            {"role": "user", "content": "Bob: follow-up without a mention"},
        ]


async def test_direct_message_is_answered_in_a_thread_under_it(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        fake_llm.answer = Answer.of("Hi Alice.")
        dm = await rig.say("D1", ALICE, "hello bot")
        await rig.wait_reply(dm, "Hi Alice.")
        assert rig.fake.writes()[0].params["thread_ts"] == dm.ts

        fake_llm.answer = Answer.of("Still here.")
        await rig.say("D1", ALICE, "still there?", thread_ts=dm.ts)
        await rig.wait_reply(dm, "Hi Alice.Still here.")
        assert [m["role"] for m in fake_llm.requests[1]["messages"]] == [
            "system",
            "user",
            "assistant",
            "user",
        ]
        # A new top-level DM is a new conversation.
        fake_llm.answer = Answer.of("New topic.")
        other = await rig.say("D1", ALICE, "another question")
        await rig.wait_reply(other, "New topic.")
        assert len(fake_llm.requests[2]["messages"]) == 2


async def test_own_messages_and_other_bots_are_ignored(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake = FakeSlack(echo_bot_messages=True)  # the bot's posts and edits come back as events
    async with slack_rig(base_env, fake_llm, fake=fake) as rig:
        fake_llm.answer = Answer.words(20, tokens_per_second=40)
        first_answer = fake_llm.answer.text
        first = await rig.say("C1", ALICE, f"<@{BOT}> hi")
        await rig.wait_reply(first, first_answer)
        echoes = [e for e in rig.fake.envelopes if e["payload"]["event"].get("bot_id") == "B0BOT"]
        assert echoes  # the bot's own posts did come back, and were not answered

        await rig.deliver(
            {
                "type": "message",
                "subtype": "bot_message",
                "bot_id": "B0OTHER",
                "text": "I am another bot",
                "ts": "1700000000.000001",
                "thread_ts": first.ts,
                "channel": "C1",
                "channel_type": "channel",
            }
        )
        # (A person's edits are followed: tests/core/test_edits.py.)
        fake_llm.answer = Answer.of("ok")
        await rig.say("C1", ALICE, "thanks", thread_ts=first.ts)
        await rig.wait_reply(first, first_answer + "ok")
        assert len(fake_llm.requests) == 2
