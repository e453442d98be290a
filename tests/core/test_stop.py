"""Stop: a button while an answer streams (Slack, Discord), pressed by the asker or an admin.

End to end with the real slack-bolt and discord.py against the fakes: the model stream is
cut, the text so far stays marked stopped, the history keeps it marked, the button goes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from adapters.slack.controls import STOP_ACTION
from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.contract import Controls, ConversationKey, SurfaceLimits
from bot.engine import Engine
from bot.ops import metrics
from bot.turn import STOPPED_NOTE
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack_state import Message
from tests.support.core import ALICE as ALICE_CORE
from tests.support.core import BOB as CORE_BOB
from tests.support.core import turn
from tests.support.discord_fixtures import Rig, fake_discord, llm, rig, world
from tests.support.helpers import wait_until
from tests.support.slack_fixtures import ADMIN, ALICE, BOB, BOT, SlackRig, slack_rig
from tests.support.surfaces import RecordingSurface

__all__ = ["fake_discord", "llm", "rig", "world"]  # fixtures used by name

SLOW = {"tokens_per_second": 40.0}  # 400 words: 10 s, long enough to press Stop mid-way


def actions_of(message: Message) -> set[str]:
    return {
        str(e.get("action_id")) for b in message.blocks or [] for e in b.get("elements") or []
    }


async def streaming_reply(rig: SlackRig, asked: Message) -> Message:
    """The bot's reply once it shows a few words with its Stop button."""
    reply: Message = await rig.fake.wait_for(
        lambda: next(
            (
                m for m in rig.fake.bot_replies(asked.channel, asked.ts)
                if STOP_ACTION in actions_of(m) and " w5" in m.visible
            ),
            None,
        ),
        10,
    )
    return reply


async def stored(rig: SlackRig | Rig, conversation: ConversationKey) -> list[Any]:
    return await rig.engine.conversations.load(conversation)


async def test_slack_stop_keeps_the_partial_marked_stores_it_and_removes_the_button(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    metrics.reset()
    fake_llm.answer = Answer.words(400, **SLOW)
    async with slack_rig(base_env, fake_llm) as rig:
        asked = await rig.say("C1", ALICE, f"<@{BOT}> count to 400")
        reply = await streaming_reply(rig, asked)
        await rig.fake.wait_ack(await rig.fake.press(reply, STOP_ACTION, user=ALICE.id))
        await rig.idle()

        stream = fake_llm.streams[-1]
        await rig.fake.wait_for(lambda: stream.gone, 2.0)  # the model saw the client go
        assert 5 <= stream.sent < 400
        shown = rig.fake.seen_text("C1", asked.ts)
        partial, _, note = shown.rpartition("\n\n")
        assert note == STOPPED_NOTE
        assert fake_llm.answer.text.startswith(partial) and len(partial) < len(fake_llm.answer.text)
        # The button went with the final edit.
        (final,) = rig.fake.bot_replies("C1", asked.ts)
        assert STOP_ACTION not in actions_of(final)
        # Stored as the partial answer, marked stopped.
        conversation = ConversationKey("slack", rig.fake.team_id, "C1", asked.ts)
        last = (await stored(rig, conversation))[-1]
        assert (last.role, last.content, last.stopped) == ("assistant", partial, True)
        assert metrics.current().registry.get_sample_value(
            "chatbot_answers_total", {"platform": "slack", "outcome": "stopped"}
        ) == 1

        # No write touches the stopped message after its final edit, while another answer runs.
        edits_before = final.edits
        fake_llm.answer = Answer.words(30, tokens_per_second=60)
        other = await rig.say("C2", BOB, f"<@{BOT}> something else")
        await rig.fake.wait_for(lambda: fake_llm.answer.text in rig.fake.seen_text("C2", other.ts))
        await rig.idle()
        assert final.edits == edits_before
        # The next question in the thread gives the model the stopped answer, marked.
        fake_llm.answer = Answer.words(3)
        again = await rig.say("C1", ALICE, f"<@{BOT}> go on", thread_ts=asked.ts)
        await rig.fake.wait_for(lambda: fake_llm.requests and len(fake_llm.requests) == 3)
        assistant = [m for m in fake_llm.requests[-1]["messages"] if m["role"] == "assistant"]
        assert assistant[-1]["content"].startswith(partial)
        assert "stopped" in assistant[-1]["content"]
        assert again.ts


async def test_slack_stop_by_someone_else_is_refused_to_them_alone(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    metrics.reset()
    fake_llm.answer = Answer.words(400, **SLOW)
    async with slack_rig(base_env, fake_llm) as rig:
        asked = await rig.say("C1", ALICE, f"<@{BOT}> count to 400")
        reply = await streaming_reply(rig, asked)
        await rig.fake.wait_ack(await rig.fake.press(reply, STOP_ACTION, user=BOB.id))
        (refusal,) = await rig.fake.wait_for(lambda: rig.fake.responses)
        assert refusal.body["response_type"] == "ephemeral"
        assert refusal.body.get("replace_original") is False
        assert "Only" in refusal.body["text"] and "can stop" in refusal.body["text"]
        assert fake_llm.streams[-1].gone is None  # still streaming
        # A workspace admin may stop it.
        await rig.fake.wait_ack(await rig.fake.press(reply, STOP_ACTION, user=ADMIN.id))
        await rig.idle()
        assert rig.fake.seen_text("C1", asked.ts).endswith(STOPPED_NOTE)
        sample = metrics.current().registry.get_sample_value
        assert sample("chatbot_stops_total", {"platform": "slack", "result": "refused"}) == 1
        assert sample("chatbot_stops_total", {"platform": "slack", "result": "stopped"}) == 1


async def test_slack_http_stop_press_is_verified_and_claimed_once(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(400, **SLOW)
    async with slack_rig(base_env, fake_llm, mode="http") as rig:
        assert rig.sender is not None
        asked = await rig.say("C1", ALICE, f"<@{BOT}> count to 400")
        reply = await streaming_reply(rig, asked)
        payload = rig.fake.action_payload(reply, STOP_ACTION, user=ALICE.id)
        # Forged and stale presses are refused before bolt sees them; nothing stops.
        assert (await rig.sender.send_interactive(payload, forge=True)).status == 401
        assert (await rig.sender.send_interactive(payload, age=600)).status == 401
        assert fake_llm.streams[-1].gone is None
        # The real one is acknowledged within Slack's 3 s; its redelivery does nothing more.
        first = await rig.sender.send_interactive(payload)
        assert first.status == 200 and first.elapsed < 3.0
        again = await rig.sender.send_interactive(payload, retry_num=1)
        assert again.status == 200
        await rig.idle()
        assert rig.fake.seen_text("C1", asked.ts).endswith(STOPPED_NOTE)
        assert rig.fake.responses == []  # the asker was told nothing: the message says it


async def test_slack_stop_after_the_answer_finished_says_so(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(400, **SLOW)
    async with slack_rig(base_env, fake_llm) as rig:
        asked = await rig.say("C1", ALICE, f"<@{BOT}> count to 400")
        reply = await streaming_reply(rig, asked)
        payload = rig.fake.action_payload(reply, STOP_ACTION, user=ALICE.id)
        await rig.fake.wait_ack(await rig.fake.push("interactive", payload))
        await rig.idle()
        # A press that was on its way while the answer finished (a fresh action_ts).
        payload["actions"][0]["action_ts"] = "9999999999.000001"
        await rig.fake.wait_ack(await rig.fake.push("interactive", payload))
        (told,) = await rig.fake.wait_for(lambda: rig.fake.responses)
        assert "already finished" in told.body["text"]


# ---- Discord -------------------------------------------------------------------------------


def buttons(message: dict[str, Any]) -> list[str]:
    return [str(c.get("custom_id")) for row in message.get("components") or [] for c in row["components"]]


async def discord_streaming(rig: Rig, channel: Any) -> dict[str, Any]:
    def live() -> dict[str, Any] | None:
        for message in rig.fake.bot_messages(channel):
            shows_words = " w5" in str(message.get("content"))
            if shows_words and any(b.startswith("chatbot:stop:") for b in buttons(message)):
                return message
        return None

    await wait_until(lambda: live() is not None, timeout=10)
    found = live()
    assert found is not None
    return found


async def test_discord_stop_keeps_the_partial_marked_stores_it_and_removes_the_button(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    rig.llm.answer = Answer.words(400, **SLOW)
    await fake.user_message(w.general, w.alice, f"{fake.bot.mention} count to 400")
    message = await discord_streaming(rig, w.general)
    (stop_id,) = buttons(message)
    press = await fake.press_button(w.alice, w.general, message, stop_id)
    await wait_until(lambda: rig.engine.live_answers == 0, timeout=10)
    assert press.callbacks and press.callbacks[0]["type"] == 6  # a silent "deferred update"
    assert not press.late

    stream = rig.llm.streams[-1]
    await wait_until(lambda: stream.gone is not None, timeout=2)
    assert 5 <= stream.sent < 400
    (final,) = fake.bot_messages(w.general)
    partial, _, note = str(final["content"]).rpartition("\n\n")
    assert note == STOPPED_NOTE
    assert rig.llm.answer.text.startswith(partial)
    assert not any(b.startswith("chatbot:stop:") for b in buttons(final))
    asked_id = message["message_reference"]["message_id"]
    conversation = ConversationKey("discord", w.guild.id, w.general.id, asked_id)
    entries = await stored(rig, conversation)
    assert entries and (entries[-1].content, entries[-1].stopped) == (partial, True)


async def test_discord_stop_by_someone_else_is_refused_ephemerally(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    rig.llm.answer = Answer.words(400, **SLOW)
    await fake.user_message(w.general, w.alice, f"{fake.bot.mention} count to 400")
    message = await discord_streaming(rig, w.general)
    (stop_id,) = buttons(message)
    press = await fake.press_button(w.bob, w.general, message, stop_id)
    text = await press.answered()
    assert press.ephemeral and "Only Alice" in text
    assert rig.llm.streams[-1].gone is None
    await fake.press_button(w.alice, w.general, message, stop_id)
    await wait_until(lambda: rig.engine.live_answers == 0, timeout=10)
    assert str(fake.bot_messages(w.general)[-1]["content"]).endswith(STOPPED_NOTE)


# ---- the core: which message carries which buttons ------------------------------------------


async def test_only_the_message_being_written_carries_stop_and_the_last_the_feedback(
    engine: Engine, fake_llm: FakeLLM
) -> None:
    surface = RecordingSurface(limits=SurfaceLimits(max_chars=300, min_edit_interval=0.01, controls=True))
    fake_llm.answer = Answer.words(200, tokens_per_second=400)  # about 1,000 characters: 4 messages
    asked = turn("long one", surface=surface)
    outcome = await engine.answer(asked)
    assert outcome.outcome == "ok"
    ids = list(surface.messages)
    assert len(ids) >= 3
    # Finished: the earlier messages carry nothing, the last one the feedback buttons.
    assert [surface.controls[i] for i in ids[:-1]] == [None] * (len(ids) - 1)
    assert surface.controls[ids[-1]] == Controls(asked.answer_id, feedback=True)
    # While the model wrote, Stop was on the newest message only, never on a sealed one.
    for write in surface.platform_writes:
        if write.controls is not None and write.controls.stop:
            later = [w for w in surface.platform_writes if w.kind == "post" and w.at > write.at]
            assert write.message_id == ids[-1] or later, "Stop left on a message no longer written"
    sealed_last = {w.message_id: w.controls for w in surface.platform_writes}
    assert all(c is None for m, c in sealed_last.items() if m != ids[-1])


async def test_a_surface_without_controls_gets_none_and_a_stop_before_streaming_is_told(
    engine: Engine, fake_llm: FakeLLM
) -> None:
    surface = RecordingSurface()
    fake_llm.answer = Answer.words(5)
    asked = turn("short", surface=surface)
    await engine.answer(asked)
    assert all(w.controls is None for w in surface.writes)
    pressed = await engine.stop(asked.answer_id, ALICE_CORE, can_admin=False)
    assert not pressed.done and "already finished" in pressed.message


# ---- across replicas: the press reaches a process that does not stream the answer ------------


async def test_a_press_on_another_replica_stops_the_answer_or_is_refused_there(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    settings = load_settings(engine_env, dotenv=False)
    async with open_engine(settings) as streaming, open_engine(settings) as other:
        await asyncio.wait_for(streaming.remote_stops.listening.wait(), 5)
        limits = SurfaceLimits(max_chars=4000, min_edit_interval=0.05, controls=True)
        surface = RecordingSurface(limits=limits)
        fake_llm.answer = Answer.words(400, tokens_per_second=40)
        asked = turn("count", surface=surface)
        task = streaming.submit(asked)
        await wait_until(lambda: " w5" in surface.text, timeout=10)

        # Bob (not the asker, no admin) is refused by the streaming replica, through the other.
        refused = await other.stop(asked.answer_id, CORE_BOB, can_admin=False)
        assert not refused.done and "Only Alice" in refused.message
        assert not task.done()
        # Alice stops it from the other replica, within a second.
        pressed_at = time.monotonic()
        pressed = await other.stop(asked.answer_id, ALICE_CORE, can_admin=False)
        assert pressed.done and pressed.message == ""
        outcome = await asyncio.wait_for(task, 5)
        assert outcome.outcome == "stopped"
        assert outcome.stream_cut_at is not None and outcome.stream_cut_at - pressed_at < 1.0
        assert surface.text.endswith(STOPPED_NOTE)
        # A press for an answer nobody streams any more says so.
        late = await other.stop(asked.answer_id, ALICE_CORE, can_admin=False)
        assert not late.done and "already finished" in late.message
