"""Malformed, half-formed and oversized input: refused or ignored, and the bot keeps serving."""

from __future__ import annotations

from tests.fakes.llm import Answer, FakeLLM
from tests.support.slack_fixtures import ALICE, BOT, slack_rig


async def test_malformed_bodies_are_refused_and_the_next_event_is_answered(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("Still here.")
    async with slack_rig(base_env, fake_llm, mode="http") as rig:
        sender = rig.sender
        assert sender is not None
        for forge in (False, True):
            garbage = await sender._post("{not json", "application/json", forge=forge)
            assert garbage.status == (401 if forge else 400)  # unauthenticated: not even parsed
        half_formed = [
            {"type": "event_callback", "team_id": rig.fake.team_id},  # no event
            rig.fake.callback({"type": "app_mention", "channel": "C1"}),  # no user, text or ts
            rig.fake.callback({"type": "message", "text": None, "ts": "1.1", "channel": "C1"}),
        ]
        for body in half_formed:
            reply = await sender.send_event(body)
            assert reply.status < 500, reply

        msg = await rig.say("C1", ALICE, f"<@{BOT}> are you alive?")
        await rig.wait_reply(msg, "Still here.")
        assert len(fake_llm.requests) == 1


async def test_huge_message_gets_a_clear_reply_and_no_model_call(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        msg = await rig.say("C1", ALICE, f"<@{BOT}> " + "lorem ipsum " * 5000)
        await rig.fake.wait_for(lambda: rig.fake.bot_replies("C1", msg.ts))
        await rig.idle()
        (reply,) = rig.fake.bot_replies("C1", msg.ts)
        assert "59,999 characters long; I can take up to 8,000" in rig.fake.seen_text("C1", msg.ts)
        assert fake_llm.requests == []
        assert reply.thread_ts == msg.ts


async def test_empty_mention_gets_a_hint(base_env: dict[str, str], fake_llm: FakeLLM) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        msg = await rig.say("C1", ALICE, f"<@{BOT}>")
        await rig.fake.wait_for(lambda: rig.fake.bot_replies("C1", msg.ts))
        assert "Ask me something" in rig.fake.seen_text("C1", msg.ts)
        assert fake_llm.requests == []
