"""Tools in Slack's native streaming, end to end: the real slack-bolt against the fake Slack, the
fake model calling the SDK-built MCP server over stdio. The steps go as `task_update` chunks (and a
`plan_update` when several run) on the stream's own writes; the answer's text has no steps section."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.slack import streaming
from adapters.slack.mentions import SAFE_ANGLE, SAFE_AT
from tests.fakes.llm import Answer, FakeLLM
from tests.support.slack_fixtures import ALICE, BOT, slack_rig
from tests.tools.servers import tool_settings
from tests.tools.test_tool_platforms import loud_then_echo

IDLE_STOP = streaming.IDLE_STOP


def slow_then_answer(asked: str) -> Answer:
    if "slow done" in asked:
        return Answer.of("It took its time.")
    return Answer(tokens=[], tool_calls=[("orders__slow", '{"seconds": 1.5}')])


# 0.3 s: the call outlasts the idle stop, which waits for it (its card would stay in progress).
@pytest.mark.parametrize("idle_stop", [IDLE_STOP, 0.3])
async def test_a_call_is_a_task_card_in_progress_then_complete(
    base_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    idle_stop: float,
) -> None:
    monkeypatch.setattr(streaming, "IDLE_STOP", idle_stop)
    fake_llm.script = slow_then_answer
    async with slack_rig(base_env, fake_llm, **tool_settings(tmp_path), SLACK_STREAMING="native") as rig:
        asked = await rig.say("C1", ALICE, f"<@{BOT}> take your time")
        # The card is up while the call runs (the stream starts with it, before any text) ...
        await rig.fake.wait_for(lambda: any(
            m.task_log for m in rig.fake.bot_replies("C1", asked.ts)), 20.0)
        (reply,) = rig.fake.bot_replies("C1", asked.ts)
        assert reply.cards == ["slow (1.5): in_progress"] and reply.visible == ""
        await rig.fake.wait_for(lambda: "took its time" in rig.fake.seen_text("C1", asked.ts), 20.0)
        await rig.idle()
        (reply,) = rig.fake.bot_replies("C1", asked.ts)
        # ... and moves on to complete, with a line of the result; one call makes no plan.
        assert [status for _, status in reply.task_log] == ["in_progress", "complete"]
        assert reply.cards == ["slow (1.5): complete → slow done"]
        assert reply.plans == []
        assert reply.visible == "It took its time." and not reply.streaming
        if idle_stop == IDLE_STOP:  # (a shorter one may stop the stream while the model writes)
            # Steps rode on the answer's own writes: one start, one stop, no write for a card alone.
            assert len(rig.fake.calls_to("chat.startStream")) == 1
            assert not rig.fake.calls_to("chat.update", "chat.postMessage")


async def test_two_parallel_calls_make_a_plan_and_the_text_has_no_steps_section(
    base_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path
) -> None:
    fake_llm.script = loud_then_echo
    async with slack_rig(base_env, fake_llm, **tool_settings(tmp_path), SLACK_STREAMING="native") as rig:
        asked = await rig.say("C1", ALICE, f"<@{BOT}> where is A-1001?")
        await rig.fake.wait_for(lambda: "Found" in rig.fake.seen_text("C1", asked.ts), 20.0)
        await rig.idle()
        (reply,) = rig.fake.bot_replies("C1", asked.ts)
        assert reply.plans and reply.plans[-1] == "Using 2 tools"
        lookup, loud = reply.cards
        assert lookup == "Looking up an order (A-1001): complete → Order A-1001: shipped, arriving Tuesday"
        # A result line is outside text: what it carried reached Slack inert.
        assert loud.startswith("loud: complete → Hey ") and "<!channel>" not in loud
        assert f"{SAFE_ANGLE}!channel>" in loud and f"{SAFE_AT}everyone" in loud
        assert all(status in ("in_progress", "complete") for _, status in reply.task_log)
        assert reply.visible.startswith("Found:") and "Looking up" not in reply.visible
        assert not reply.streaming



async def test_a_refused_stream_keeps_the_steps_as_a_section_of_the_text(
    base_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path
) -> None:
    fake_llm.script = loud_then_echo
    async with slack_rig(base_env, fake_llm, **tool_settings(tmp_path), SLACK_STREAMING="native") as rig:
        rig.fake.fail_next("chat.startStream", "feature_not_enabled", times=None)
        asked = await rig.say("C1", ALICE, f"<@{BOT}> where is A-1001?")
        await rig.fake.wait_for(lambda: "Found" in rig.fake.seen_text("C1", asked.ts), 20.0)
        await rig.idle()
        (reply,) = rig.fake.bot_replies("C1", asked.ts)
        # Posted and updated: no cards, the section as in update mode, once.
        assert reply.visible.startswith("_Looking up an order (A-1001)… done_\n_loud… done_\n\nFound:")
        assert reply.visible.count("Looking up") == 1 and not reply.tasks
