"""Approval of a tool call that changes the world, end to end: Slack (real slack-bolt) and Discord
(real discord.py) against the fakes, and a press reaching another replica."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from adapters.slack.controls import APPROVE_ACTION, DENY_ACTION
from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.contract import SurfaceLimits
from bot.ops import metrics
from bot.tools.loop import DECLINED, NO_ANSWER
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack_state import Message
from tests.support.clock import FastClock
from tests.support.core import ALICE as CORE_ALICE
from tests.support.core import BOB as CORE_BOB
from tests.support.core import turn
from tests.support.discord_fixtures import World, bot_env, fake_discord, running_bot, world
from tests.support.helpers import wait_until
from tests.support.slack_fixtures import ALICE, BOB, BOT, SlackRig, slack_rig
from tests.support.surfaces import RecordingSurface
from tests.tools.servers import tool_env, tool_settings

__all__ = ["fake_discord", "world"]  # fixtures used by name

ASK = "may I do this?"


def refund_then_say(asked: str) -> Answer:
    if asked.startswith(("Alice:", "alice:")):
        return Answer(tokens=[], tool_calls=[("orders__refund", '{"order_id": "A-1"}')])
    return Answer.of(f"Result: {asked}")


def tool_result(llm: FakeLLM) -> str:
    return str(next(m for m in llm.requests[-1]["messages"] if m["role"] == "tool")["content"])


async def approval_message(rig: SlackRig, ts: str) -> Message:
    def found() -> Message | None:
        return next((m for m in rig.fake.bot_replies("C1", ts) if ASK in m.visible and has_buttons(m)), None)
    return await rig.fake.wait_for(found, 20.0)


def with_buttons() -> RecordingSurface:
    """A surface that shows buttons (so calls needing approval are offered)."""
    return RecordingSurface(limits=SurfaceLimits(max_chars=4000, min_edit_interval=0.01, controls=True))


def has_buttons(message: Message) -> bool:
    return any(b.get("type") == "actions" for b in message.blocks or [])


def approvals(decision: str) -> float:
    registry = metrics.current().registry
    value = registry.get_sample_value("chatbot_tool_approvals_total", {"decision": decision})
    return value or 0.0


async def test_slack_the_asker_approves_and_someone_else_is_refused(
    base_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path
) -> None:
    metrics.reset()
    fake_llm.script = refund_then_say
    async with slack_rig(base_env, fake_llm, **tool_settings(tmp_path)) as rig:
        asked = await rig.say("C1", ALICE, f"<@{BOT}> refund A-1")
        waiting = await approval_message(rig, asked.ts)
        assert "Refunding an order (`orders__refund`)" in waiting.visible
        assert '"order_id": "A-1"' in waiting.visible
        step = "_Refunding an order (A-1)… waiting for approval_"  # the answer's steps say what it waits for
        await rig.fake.wait_for(lambda: step in rig.fake.seen_text("C1", asked.ts), 10.0)

        await rig.fake.wait_ack(await rig.fake.press(waiting, APPROVE_ACTION, user=BOB.id))
        (refusal,) = await rig.fake.wait_for(lambda: rig.fake.responses)
        assert refusal.body["response_type"] == "ephemeral"
        assert refusal.body["text"] == "Only the person who asked (Alice) can approve this."
        assert len(fake_llm.requests) == 1  # nothing ran

        await rig.fake.wait_ack(await rig.fake.press(waiting, APPROVE_ACTION, user=ALICE.id))
        await rig.fake.wait_for(lambda: "Result:" in rig.fake.seen_text("C1", asked.ts), 20.0)
        await rig.idle()
        assert tool_result(fake_llm) == "Order A-1 refunded"
        decided = next(m for m in rig.fake.bot_replies("C1", asked.ts) if ASK in m.visible)
        assert decided.visible.endswith("_Approved by Alice._") and not has_buttons(decided)
        answer = rig.fake.bot_replies("C1", asked.ts)[-1]
        assert answer.visible.startswith("_Refunding an order (A-1)… done_\n\nResult: Order A-1 refunded")
        assert approvals("approved") == 1


async def test_slack_deny_and_no_answer(
    base_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path
) -> None:
    fake_llm.script = refund_then_say
    async with slack_rig(base_env, fake_llm, **tool_settings(tmp_path),
                         TOOL_APPROVAL_TIMEOUT="2") as rig:
        asked = await rig.say("C1", ALICE, f"<@{BOT}> refund A-1")
        waiting = await approval_message(rig, asked.ts)
        await rig.fake.wait_ack(await rig.fake.press(waiting, DENY_ACTION, user=ALICE.id))
        await rig.fake.wait_for(lambda: "Result:" in rig.fake.seen_text("C1", asked.ts), 20.0)
        await rig.idle()
        assert tool_result(fake_llm) == DECLINED
        assert "_Refunding an order (A-1)… declined_" in rig.fake.seen_text("C1", asked.ts)

        again = await rig.say("C1", ALICE, f"<@{BOT}> refund A-1 again")
        await approval_message(rig, again.ts)  # nobody presses
        await rig.fake.wait_for(lambda: "Result:" in rig.fake.seen_text("C1", again.ts), 20.0)
        await rig.idle()
        assert tool_result(fake_llm) == NO_ANSWER
        decided = next(m for m in rig.fake.bot_replies("C1", again.ts) if ASK in m.visible)
        assert decided.visible.endswith("_No answer within 1 min: denied._")


def buttons(message: dict[str, Any]) -> list[str]:
    return [str(c.get("custom_id")) for row in message.get("components") or [] for c in row["components"]]


async def test_discord_approve_by_the_asker_only(
    world: World, fake_llm: FakeLLM, base_env: dict[str, str], tmp_path: Path
) -> None:
    fake_llm.script = refund_then_say
    env = tool_env(bot_env(base_env, world.fake, fake_llm), tmp_path)
    async with running_bot(world, fake_llm, env) as rig:
        fake, w = rig.fake, rig.world
        await fake.user_message(w.general, w.alice, f"{fake.bot.mention} refund A-1")

        def waiting() -> dict[str, Any] | None:
            shown = fake.bot_messages(w.general)
            return next((m for m in shown if ASK in str(m["content"]) and buttons(m)), None)
        message = await wait_until(waiting, timeout=20)
        approve = next(b for b in buttons(message) if b.startswith("chatbot:approve:"))
        refused = await fake.press_button(w.bob, w.general, message, approve)
        said = await refused.answered()
        assert refused.ephemeral and said.startswith("Only the person who asked")
        await fake.press_button(w.alice, w.general, message, approve)
        await wait_until(lambda: "Result:" in fake.bot_text(w.general), timeout=20)
        await wait_until(lambda: rig.engine.live_answers == 0, timeout=10)
        assert tool_result(fake_llm) == "Order A-1 refunded"
        assert not any(buttons(m) and ASK in str(m["content"]) for m in fake.bot_messages(w.general))


async def test_a_press_on_another_replica_is_relayed(
    engine_env: dict[str, str], fake_llm: FakeLLM, clock: FastClock, tmp_path: Path
) -> None:
    fake_llm.script = refund_then_say
    env = tool_env(engine_env, tmp_path)
    async with (
        open_engine(load_settings(env, dotenv=False), clock) as streaming,
        open_engine(load_settings(env, dotenv=False), clock) as pressed_on,
    ):
        await wait_until(lambda: streaming.remote_stops.listening.is_set(), timeout=10)
        surface = with_buttons()
        answering = asyncio.create_task(streaming.answer(turn("refund", surface=surface)))
        approval = await wait_until(
            lambda: next((c for c in surface.controls.values() if c is not None and c.approval), None),
            timeout=20,
        )
        refused = await pressed_on.approve(approval.answer_id, CORE_BOB, True)
        assert not refused.done and "Only the person who asked" in refused.message
        done = await pressed_on.approve(approval.answer_id, CORE_ALICE, True)
        assert done.done
        await answering
        assert tool_result(fake_llm) == "Order A-1 refunded"


async def test_stop_while_waiting_for_approval_takes_the_buttons_away(
    engine_env: dict[str, str], fake_llm: FakeLLM, clock: FastClock, tmp_path: Path
) -> None:
    fake_llm.script = refund_then_say
    async with open_engine(load_settings(tool_env(engine_env, tmp_path), dotenv=False), clock) as engine:
        surface = with_buttons()
        asked = turn("refund", surface=surface)
        answering = asyncio.create_task(engine.answer(asked))
        approval = await wait_until(
            lambda: next((m for m, c in surface.controls.items() if c is not None and c.approval), None),
            timeout=20,
        )
        assert (await engine.stop(asked.answer_id, CORE_ALICE, can_admin=False)).done
        outcome = await answering
        assert outcome.outcome == "stopped" and len(fake_llm.requests) == 1  # the refund never ran
        assert surface.messages[approval].endswith("_The answer was stopped._")
        assert surface.controls[approval] is None
