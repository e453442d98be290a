"""SLACK_STREAMING=native: chat.startStream / appendStream / stopStream, with fallbacks."""

from __future__ import annotations

import pytest

from adapters.slack import streaming
from tests.fakes.llm import Answer, FakeLLM
from tests.support.slack_fixtures import ALICE, BOT, slack_rig


@pytest.fixture(autouse=True)
def quick_idle_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    # The surface stops a stream after a pause in writes (edits come about 1 s apart);
    # a shorter pause than in production keeps tests quick.
    monkeypatch.setattr(streaming, "IDLE_STOP", 1.5)


async def test_answer_streams_natively_and_the_stream_is_stopped(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(40, tokens_per_second=20)
    async with slack_rig(base_env, fake_llm, SLACK_STREAMING="native") as rig:
        msg = await rig.say("C1", ALICE, f"<@{BOT}> stream it")
        await rig.wait_reply(msg, fake_llm.answer.text)
        await rig.fake.wait_for(lambda: rig.fake.calls_to("chat.stopStream"))

        methods = [c.method for c in rig.fake.writes()]
        assert methods[0] == "chat.startStream"
        assert "chat.appendStream" in methods
        assert "chat.update" not in methods and "chat.postMessage" not in methods
        start = rig.fake.calls_to("chat.startStream")[0].params
        assert (start["thread_ts"], start["recipient_user_id"], start["recipient_team_id"]) == (
            msg.ts,
            ALICE.id,
            rig.fake.team_id,
        )
        (reply,) = rig.fake.bot_replies("C1", msg.ts)
        assert not reply.streaming


async def test_refused_stream_falls_back_to_post_and_update(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(30, tokens_per_second=30)
    async with slack_rig(base_env, fake_llm, SLACK_STREAMING="native") as rig:
        rig.fake.fail_next("chat.startStream", "feature_not_enabled", times=None)
        msg = await rig.say("C1", ALICE, f"<@{BOT}> stream it")
        await rig.wait_reply(msg, fake_llm.answer.text)
        methods = [c.method for c in rig.fake.writes() if c.ok]
        assert methods[0] == "chat.postMessage"
        assert methods[-1] == "chat.update"


async def test_expired_stream_is_finished_with_update(base_env: dict[str, str], fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.words(40, tokens_per_second=20)
    async with slack_rig(base_env, fake_llm, SLACK_STREAMING="native") as rig:
        rig.fake.stream_ttl = 0.5  # Slack's ~5 minutes, compressed
        msg = await rig.say("C1", ALICE, f"<@{BOT}> a long one")
        await rig.wait_reply(msg, fake_llm.answer.text)
        errors = [c.error for c in rig.fake.calls_to("chat.appendStream") if not c.ok]
        assert "message_not_in_streaming_state" in errors
        assert rig.fake.calls_to("chat.update")[-1].ok
        assert len(rig.fake.bot_replies("C1", msg.ts)) == 1
