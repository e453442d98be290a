"""Shutting down without losing events, and reaching old messages after a restart."""

from __future__ import annotations

import logging

import pytest

from bot.contract import ConversationKey
from tests.fakes.llm import Answer, FakeLLM
from tests.support.slack_fixtures import ALICE, BOT, slack_rig


async def test_http_mode_refuses_events_while_shutting_down(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    async with slack_rig(base_env, fake_llm, mode="http") as rig:
        rig.engine.stop_accepting()
        msg = rig.fake.user_message("C1", ALICE.id, f"<@{BOT}> late")
        reply = await rig.send_signed(rig.fake.event_for(msg, kind="app_mention"))
        assert reply.status == 503  # Slack retries it, on a replica that is not draining
        assert fake_llm.requests == []
        # Commands still work while answers finish.
        shown = await rig.command("show", user=ALICE, channel="C1")
        assert shown["text"].startswith("This channel uses")


async def test_socket_mode_leaves_events_unacknowledged_and_stops_intake(
    base_env: dict[str, str], fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake_llm.answer = Answer.words(30, tokens_per_second=30)
    async with slack_rig(base_env, fake_llm) as rig:
        first = await rig.say("C1", ALICE, f"<@{BOT}> a long answer")
        await rig.fake.wait_for(lambda: rig.fake.bot_replies("C1", first.ts))

        rig.engine.stop_accepting()
        late = rig.fake.user_message("C2", ALICE.id, f"<@{BOT}> too late")
        envelope = await rig.fake.push_event(rig.fake.event_for(late, kind="app_mention"))
        await rig.fake.wait_for(lambda: "status: 503" in caplog.text)
        assert envelope not in rig.fake.acks  # Slack will deliver it again elsewhere

        await rig.adapter.stop_intake()
        await rig.fake.wait_for(lambda: rig.fake.connected == 0)
        # The answer in flight still lands in full through the Web API.
        await rig.wait_reply(first, fake_llm.answer.text)
        assert len(fake_llm.requests) == 1


async def test_surface_for_reaches_an_earlier_answer(base_env: dict[str, str], fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.of("Half an ans")
    async with slack_rig(base_env, fake_llm, SLACK_STREAMING="native") as rig:
        msg = await rig.say("C1", ALICE, f"<@{BOT}> question")
        await rig.wait_reply(msg, "Half an ans")
        (reply,) = rig.fake.bot_replies("C1", msg.ts)

        conversation = ConversationKey("slack", rig.fake.team_id, "C1", msg.ts)
        surface = await rig.adapter.surface_for(conversation, reply.ts)
        assert surface is not None
        await surface.edit(reply.ts, "Half an ans\n\n_(Interrupted: the bot restarted)_")
        assert reply.visible.endswith("restarted)_")
        assert rig.fake.calls_to("chat.update")[-1].ok

        other_workspace = ConversationKey("slack", "T0OTHER", "C1", msg.ts)
        assert await rig.adapter.surface_for(other_workspace, reply.ts) is None
        assert await rig.adapter.surface_for(ConversationKey("discord", "g", "c", "t"), "1") is None
