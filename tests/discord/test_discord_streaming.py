"""End to end: how an answer appears on Discord (typing, edits, long answers, 429s, errors, pings)."""

from __future__ import annotations

import pytest

from bot.ops import metrics
from tests.fakes.discord import Call, pings_anyone
from tests.fakes.llm import Answer
from tests.support.discord_fixtures import Rig, fake_discord, llm, rig, world
from tests.support.helpers import wait_until

__all__ = ["fake_discord", "llm", "rig", "world"]  # fixtures used by name

CREATE = ("POST", "/channels/{channel_id}/messages")
EDIT = ("PATCH", "/channels/{channel_id}/messages/{message_id}")


async def finished(rig: Rig, count: int = 1) -> None:
    await wait_until(lambda: len(rig.llm.requests) >= count, timeout=10)
    await wait_until(lambda: rig.engine.live_answers == 0, timeout=20)


def ok(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.status == 200]


@pytest.mark.long
async def test_dm_answer_streams_with_edits_and_lands_exactly(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    metrics.reset()
    dm = fake.dm_channel(w.alice)
    # The model is slow to start (typing shows meanwhile), then streams for 3 s.
    rig.llm.answer = Answer.words(60, tokens_per_second=20, first_token_delay=1.0)
    asked = await fake.user_message(dm, w.alice, "tell me a story")
    await finished(rig)

    (answer,) = fake.bot_messages(dm)
    assert answer["content"] == rig.llm.answer.text
    assert answer["message_reference"]["message_id"] == asked["id"]
    edits = ok(fake.calls_to(*EDIT))
    assert len(edits) >= 2
    assert len(ok(fake.calls_to(*CREATE))) == 1
    # Every write is counted for /metrics.
    written = metrics.current().registry.get_sample_value
    labels = {"platform": "discord", "status": "ok"}
    assert written("chatbot_platform_writes_total", labels | {"method": "edit_message"}) == len(edits)
    assert written("chatbot_platform_writes_total", labels | {"method": "create_message"}) == 1
    # Progress shown while the model was still writing, each edit carrying everything so far.
    assert all(rig.llm.answer.text.startswith(str(e.content)) for e in edits)
    assert edits[0].at < rig.llm.last_token_times[0]
    (typing,) = fake.calls_to("POST", "/channels/{channel_id}/typing")
    assert typing.at < rig.llm.first_token_times[0] < fake.calls_to(*CREATE)[0].at


async def test_a_quick_answer_needs_no_typing_indicator(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    rig.llm.answer = Answer.words(5)
    await fake.user_message(w.general, w.alice, f"{fake.bot.mention} quick")
    await finished(rig)
    assert fake.bot_text(w.general) == rig.llm.answer.text
    assert fake.calls_to("POST", "/channels/{channel_id}/typing") == []


async def test_a_5000_character_answer_arrives_in_3_messages_with_fences_intact(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    prose = " ".join(f"word{i}" for i in range(300))  # ~2,400 characters
    code = "\n".join(f"    print('line {i}')" for i in range(90))  # ~1,900 characters
    text = f"{prose}\n\n```python\n{code}\n```\n\n{prose[:800]}"
    assert 4800 < len(text) < 5200
    rig.llm.answer = Answer.of(text, chunk=40)
    await fake.user_message(w.general, w.alice, f"{fake.bot.mention} write a lot")
    await finished(rig)

    parts = fake.bot_messages(w.general)
    assert len(parts) == 3
    assert all(len(p["content"]) <= 2000 for p in parts)
    for part in parts:
        fences = [line for line in part["content"].split("\n") if line.startswith("```")]
        assert len(fences) % 2 == 0, f"unbalanced code fence in: {part['content'][:80]}…"
    # Each continuation replies to the part before it.
    assert parts[1]["message_reference"]["message_id"] == parts[0]["id"]
    assert parts[2]["message_reference"]["message_id"] == parts[1]["id"]
    # Nothing lost: every line of the answer appears, in order.
    shown = "\n".join(p["content"] for p in parts)
    position = 0
    for line in text.split("\n"):
        for word in line.split():
            position = shown.index(word, position)


async def test_429_on_edits_still_ends_with_the_exact_text(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    fake.limiter.refuse_next("edit", times=3, retry_after=0.3)
    rig.llm.answer = Answer.words(40, tokens_per_second=20)
    await fake.user_message(w.general, w.alice, f"{fake.bot.mention} go")
    await finished(rig)

    assert [c.route for c in fake.rate_limited] == [EDIT[1]] * 3
    (answer,) = fake.bot_messages(w.general)
    assert answer["content"] == rig.llm.answer.text


async def test_the_bot_never_pings_anyone(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    role = fake.add_role(w.guild, "oncall")
    rig.llm.answer = Answer.of(
        f"Hey @everyone and @here, {w.bob.mention} and <@&{role}>: " + "more words " * 30,
        tokens_per_second=40,
    )
    await fake.user_message(w.general, w.alice, f"{fake.bot.mention} ping everyone please")
    await finished(rig)
    command = await fake.slash_command(w.alice, w.general, "persona", subcommand="show")
    await command.answered()

    writes = fake.writes(w.general)
    assert len(writes) >= 2
    for call in writes:
        assert call.json["allowed_mentions"]["parse"] == []
        assert not pings_anyone(call.json, is_reply=call.method == "POST")
    for callback in command.callbacks:
        assert callback["data"]["allowed_mentions"]["parse"] == []
        assert not pings_anyone(callback["data"], is_reply=False)
    assert "@everyone" in fake.bot_text(w.general)  # shown as text, notifying nobody


async def test_a_model_failure_replies_with_the_error(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    rig.llm.fail_next("503")
    asked = await fake.user_message(w.general, w.alice, f"{fake.bot.mention} are you there?")
    await finished(rig)

    (reply,) = fake.bot_messages(w.general)
    assert "model is unavailable" in reply["content"]
    assert reply["message_reference"]["message_id"] == asked["id"]
    assert fake.token not in reply["content"]


async def test_an_interrupted_stream_keeps_the_partial_answer_marked(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    rig.llm.answer = Answer.words(20)
    rig.llm.fail_next("cut")
    await fake.user_message(w.general, w.alice, f"{fake.bot.mention} go")
    await finished(rig)

    (reply,) = fake.bot_messages(w.general)
    assert reply["content"].startswith("w1 w2")
    assert "Interrupted" in reply["content"]
