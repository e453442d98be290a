"""👍/👎 on finished answers: once per person per answer (changing replaces it), with an optional
reason for 👎 through a modal; end to end with the real slack-bolt and discord.py on the fakes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import redis.asyncio as redis

from adapters.slack.controls import FEEDBACK_ACTION, STOP_ACTION
from adapters.slack.presses import REASON_BLOCK, REASON_INPUT, REASON_VIEW
from bot.contract import SurfaceLimits
from bot.conversations.feedback import THANKS, Feedback, Totals
from bot.engine import Engine
from bot.ops import metrics
from bot.state.keys import Keys
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack_state import Message
from tests.support.cli import run_cli
from tests.support.core import ALICE as CORE_ALICE
from tests.support.core import BOB as CORE_BOB
from tests.support.core import turn
from tests.support.discord_fixtures import Rig, fake_discord, llm, rig, world
from tests.support.helpers import wait_until
from tests.support.slack_fixtures import ALICE, BOB, BOT, SlackRig, slack_rig
from tests.support.surfaces import RecordingSurface

__all__ = ["fake_discord", "llm", "rig", "world"]  # fixtures used by name


def element_ids(message: Message) -> set[str]:
    return {str(e.get("action_id")) for b in message.blocks or [] for e in b.get("elements") or []}


async def answered(rig: SlackRig, text: str) -> Message:
    asked = await rig.say("C1", ALICE, f"<@{BOT}> {text}")
    await rig.wait_reply(asked, rig.llm.answer.text)
    (reply,) = rig.fake.bot_replies("C1", asked.ts)
    return reply


def value_of(message: Message, kind: str) -> str:
    for block in message.blocks or []:
        for element in block.get("elements") or []:
            if element.get("type") == "feedback_buttons":
                button = element["positive_button" if kind == "up" else "negative_button"]
                return str(button["value"])
    raise AssertionError("no feedback buttons")


async def votes(client: redis.Redis, prefix: str, answer_id: str) -> dict[str, dict[str, Any]]:
    raw = await client.hgetall(Keys(prefix).feedback_votes(answer_id))
    return {str(k): json.loads(v) for k, v in raw.items()}


async def test_slack_feedback_is_recorded_once_per_person_and_changeable(
    base_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis, redis_prefix: str
) -> None:
    metrics.reset()
    fake_llm.answer = Answer.words(12)
    async with slack_rig(base_env, fake_llm) as rig:
        reply = await answered(rig, "hello")
        # The finished answer carries the feedback buttons, no Stop.
        assert element_ids(reply) == {FEEDBACK_ACTION}
        assert reply.blocks is not None and reply.blocks[-1]["type"] == "context_actions"
        answer_id = value_of(reply, "up").split(":", 1)[1]

        up = await rig.fake.press(reply, FEEDBACK_ACTION, user=ALICE.id, value=value_of(reply, "up"))
        await rig.fake.wait_ack(up)
        (thanks,) = await rig.fake.wait_for(lambda: rig.fake.responses)
        assert thanks.body["text"] == THANKS and thanks.body["response_type"] == "ephemeral"
        # The same press again (a fresh delivery) and Bob's 👍: still one vote each; Alice's
        # second press within seconds is not answered again (bot.conversations.presses).
        for person in (ALICE, BOB):
            await rig.fake.wait_ack(
                await rig.fake.press(reply, FEEDBACK_ACTION, user=person.id, value=value_of(reply, "up"))
            )
        await rig.fake.wait_for(lambda: len(rig.fake.responses) == 2)
        recorded = await votes(redis_client, redis_prefix, answer_id)
        assert {k: v["value"] for k, v in recorded.items()} == {ALICE.id: "up", BOB.id: "up"}

        # Alice changes her mind: 👎 replaces her 👍 and asks why in a modal.
        down = await rig.fake.press(reply, FEEDBACK_ACTION, user=ALICE.id, value=value_of(reply, "down"))
        await rig.fake.wait_ack(down)
        (modal,) = await rig.fake.wait_for(lambda: rig.fake.views)
        assert modal["callback_id"] == REASON_VIEW and modal["private_metadata"] == answer_id
        submitted = await rig.fake.submit_view(
            modal, user=ALICE.id,
            values={REASON_BLOCK: {REASON_INPUT: {"type": "plain_text_input", "value": "too vague"}}},
        )
        await rig.fake.wait_ack(submitted)

        async def alice_reason() -> str:
            return str((await votes(redis_client, redis_prefix, answer_id))[ALICE.id].get("reason", ""))

        await wait_until_async(alice_reason, "too vague")
        recorded = await votes(redis_client, redis_prefix, answer_id)
        assert {k: v["value"] for k, v in recorded.items()} == {ALICE.id: "down", BOB.id: "up"}

        # The totals count current votes: one 👍 (Bob), one 👎 (Alice), for the preset and model.
        (totals,) = await Feedback(rig.engine.store).totals()
        assert totals == Totals("slack", "default", "test/model", up=1, down=1)
        assert totals.ratio == 0.5
        sample = metrics.current().registry.get_sample_value
        labels = {"platform": "slack", "persona": "default", "model": "test/model"}
        assert sample("chatbot_feedback_total", labels | {"value": "up"}) == 2  # Alice's first, Bob's
        assert sample("chatbot_feedback_total", labels | {"value": "down"}) is None  # votes count once…
        assert sample("chatbot_feedback_changes_total", labels | {"value": "down"}) == 1  # …minds apart


async def wait_until_async(read: Any, wanted: str, within: float = 5.0) -> None:
    """Wait until the coroutine `read()` returns `wanted` (a Redis read: the fake cannot see it)."""
    deadline = time.monotonic() + within
    while (got := await read()) != wanted:
        assert time.monotonic() < deadline, f"still {got!r}"
        await asyncio.sleep(0.02)


async def test_slack_forged_view_submission_is_refused(
    base_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis, redis_prefix: str
) -> None:
    fake_llm.answer = Answer.words(5)
    async with slack_rig(base_env, fake_llm, mode="http") as rig:
        assert rig.sender is not None
        reply = await answered(rig, "hi")
        answer_id = value_of(reply, "down").split(":", 1)[1]
        press = rig.fake.action_payload(reply, FEEDBACK_ACTION, user=BOB.id, value=value_of(reply, "down"))
        assert (await rig.sender.send_interactive(press, forge=True)).status == 401
        assert await votes(redis_client, redis_prefix, answer_id) == {}
        assert (await rig.sender.send_interactive(press)).status == 200
        (modal,) = await rig.fake.wait_for(lambda: rig.fake.views)
        submission = rig.fake.submission_payload(
            modal, user=BOB.id,
            values={REASON_BLOCK: {REASON_INPUT: {"type": "plain_text_input", "value": "x"}}},
        )
        assert (await rig.sender.send_interactive(submission, forge=True)).status == 401
        recorded = await votes(redis_client, redis_prefix, answer_id)
        assert recorded[BOB.id] == {"value": "down", "reason": "", "at": recorded[BOB.id]["at"]}


async def test_a_stopped_answer_gets_feedback_buttons_too(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(400, tokens_per_second=40)
    async with slack_rig(base_env, fake_llm) as rig:
        asked = await rig.say("C1", ALICE, f"<@{BOT}> count")
        reply = await rig.fake.wait_for(
            lambda: next(
                (m for m in rig.fake.bot_replies("C1", asked.ts) if STOP_ACTION in element_ids(m)), None
            )
        )
        await rig.fake.wait_ack(await rig.fake.press(reply, STOP_ACTION, user=ALICE.id))
        await rig.idle()
        assert element_ids(reply) == {FEEDBACK_ACTION}


# ---- Discord -------------------------------------------------------------------------------


def buttons(message: dict[str, Any]) -> list[str]:
    return [str(c.get("custom_id")) for row in message.get("components") or [] for c in row["components"]]


async def test_discord_feedback_once_per_person_changeable_with_a_reason(
    rig: Rig, redis_client: redis.Redis, base_env: dict[str, str]
) -> None:
    fake, w = rig.fake, rig.world
    prefix = base_env["REDIS_PREFIX"]
    rig.llm.answer = Answer.words(8)
    await fake.user_message(w.general, w.alice, f"{fake.bot.mention} hi")
    await wait_until(
        lambda: rig.engine.live_answers == 0 and len(fake.bot_messages(w.general)) == 1, timeout=10
    )
    (answer,) = fake.bot_messages(w.general)
    up_id, down_id = buttons(answer)
    assert up_id.startswith("chatbot:up:") and down_id.startswith("chatbot:down:")
    answer_id = up_id.rsplit(":", 1)[1]

    up = await fake.press_button(w.alice, w.general, answer, up_id)
    assert await up.answered() == THANKS and up.ephemeral
    again = await fake.press_button(w.alice, w.general, answer, up_id)
    await wait_until(lambda: bool(again.callbacks), timeout=5)
    assert again.callbacks[0]["type"] == 6 and not again.messages  # acknowledged, not answered again
    recorded = await votes(redis_client, prefix, answer_id)
    assert {k: v["value"] for k, v in recorded.items()} == {w.alice.id: "up"}

    down = await fake.press_button(w.alice, w.general, answer, down_id)
    await wait_until(lambda: bool(down.callbacks), timeout=5)
    assert down.callbacks[0]["type"] == 9  # a modal, asking why
    submitted = await fake.submit_modal(w.alice, w.general, down, {"reason": "wrong facts"})
    assert await submitted.answered() == THANKS and submitted.ephemeral
    recorded = await votes(redis_client, prefix, answer_id)
    assert (recorded[w.alice.id]["value"], recorded[w.alice.id]["reason"]) == ("down", "wrong facts")
    (totals,) = await Feedback(rig.engine.store).totals()
    assert (totals.platform, totals.up, totals.down) == ("discord", 0, 1)


# ---- the core and `python -m bot usage` ------------------------------------------------------


async def test_usage_shows_the_share_of_thumbs_up_per_persona_and_model(
    engine: Engine, engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(5)
    with_buttons = SurfaceLimits(max_chars=4000, min_edit_interval=0.05, controls=True)
    first, second = (
        turn(f"q{i}", thread=f"t{i}", surface=RecordingSurface(limits=with_buttons)) for i in (1, 2)
    )
    await engine.answer(first)
    await engine.answer(second)
    await engine.command("persona use pirate", scope=first.conversation.channel_scope, conversation=None,
                         actor=CORE_ALICE, can_admin=True)
    third = turn("q3", thread="t3", surface=RecordingSurface(limits=with_buttons))
    await engine.answer(third)
    for answer_id, who, value in (
        (first.answer_id, CORE_ALICE, "up"), (first.answer_id, CORE_BOB, "up"),
        (second.answer_id, CORE_ALICE, "down"), (third.answer_id, CORE_BOB, "down"),
    ):
        assert (await engine.feedback(answer_id, who, value)).done
    # Not an answer on record (no buttons, or long gone), a value that is not a vote.
    unknown = await engine.feedback("nope", CORE_ALICE, "up")
    assert not unknown.done and "too old" in unknown.message
    assert not (await engine.feedback(first.answer_id, CORE_ALICE, "meh")).done

    code, out, err = await run_cli(["usage"], engine_env)
    assert code == 0, err
    section = out[out.index("Feedback:"):]
    rows = section.splitlines()
    default_row = next(line for line in rows if line.startswith("test default test/model"))
    assert default_row.split()[3:] == ["2", "1", "67%"]
    pirate_row = next(line for line in rows if line.startswith("test pirate test/model"))
    assert pirate_row.split()[3:] == ["0", "1", "0%"]
