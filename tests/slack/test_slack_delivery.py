"""Slack delivers events more than once and anyone can post to a URL: answered once, signed only."""

from __future__ import annotations

import logging

import pytest

from tests.fakes.llm import Answer, FakeLLM
from tests.support.slack_fixtures import ALICE, BOT, slack_rig


def already_answered(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.getMessage().startswith("already answered"))


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_same_event_delivered_three_times_is_answered_once(
    base_env: dict[str, str],
    fake_llm: FakeLLM,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="adapters.slack.intake")
    fake_llm.answer = Answer.words(10, tokens_per_second=50)
    async with slack_rig(base_env, fake_llm, mode=mode) as rig:
        msg = rig.fake.user_message("C1", ALICE.id, f"<@{BOT}> hello")
        mention, message = rig.fake.events_for(msg)
        for attempt in range(3):
            # Slack retries with the same event_id (and, over HTTP, X-Slack-Retry-Num);
            # async bolt in Socket Mode drops the retry fields, so nothing relies on them.
            if rig.sender is not None:
                body = rig.fake.callback(mention, event_id="Ev0SAME")
                retry = attempt or None
                assert (await rig.sender.send_event(body, retry_num=retry)).status == 200
            else:
                await rig.deliver(mention, event_id="Ev0SAME")
            await rig.deliver(message)
        await rig.wait_reply(msg, fake_llm.answer.text)
        await rig.fake.wait_for(lambda: already_answered(caplog) == 2)
        assert len(fake_llm.requests) == 1
        assert len(rig.fake.bot_replies("C1", msg.ts)) == 1


async def test_forged_signature_and_old_timestamp_are_rejected(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("Signed and answered.")
    async with slack_rig(base_env, fake_llm, mode="http") as rig:
        msg = rig.fake.user_message("C1", ALICE.id, f"<@{BOT}> hello")
        event = rig.fake.event_for(msg, kind="app_mention")

        forged = await rig.send_signed(event, forge=True)
        stale = await rig.send_signed(event, age=6 * 60)
        assert (forged.status, stale.status) == (401, 401)

        fresh = await rig.send_signed(event, age=60)  # a minute off is within Slack's 5
        assert fresh.status == 200
        assert fresh.elapsed < 1.0  # acknowledged at once, answered afterwards
        await rig.wait_reply(msg, "Signed and answered.")
        assert len(fake_llm.requests) == 1


async def test_slash_command_must_be_signed_too(base_env: dict[str, str], fake_llm: FakeLLM) -> None:
    async with slack_rig(base_env, fake_llm, mode="http") as rig:
        assert rig.sender is not None
        payload = rig.fake.command_payload("reset", user=ALICE.id, channel="C1")
        assert (await rig.sender.send_command(payload, forge=True)).status == 401
        assert rig.fake.responses == []


async def test_http_mode_answers_url_verification(base_env: dict[str, str], fake_llm: FakeLLM) -> None:
    async with slack_rig(base_env, fake_llm, mode="http") as rig:
        assert rig.sender is not None
        reply = await rig.sender.send_event({"type": "url_verification", "challenge": "c-123"})
        assert reply.status == 200
        assert "c-123" in reply.body
