"""`/persona` and forgetting a thread, through real slack-bolt and the fake Slack."""

from __future__ import annotations

import pytest

from tests.fakes.llm import Answer, FakeLLM
from tests.support.slack_fixtures import ADMIN, ALICE, BOB, BOT, slack_rig

PROMPT = "You are a terse SRE."


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_persona_set_is_refused_for_others_and_applies_for_admins(
    base_env: dict[str, str], fake_llm: FakeLLM, mode: str
) -> None:
    async with slack_rig(base_env, fake_llm, mode=mode) as rig:
        refused = await rig.command(f"set {PROMPT}", user=BOB, channel="C1")
        assert refused["response_type"] == "ephemeral"
        assert "only workspace admins and owners" in refused["text"]
        assert refused["blocks"] == [{"type": "markdown", "text": refused["text"]}]

        done = await rig.command(f"set {PROMPT}", user=ADMIN, channel="C1")
        assert done["text"].startswith("Done")

        fake_llm.answer = Answer.of("Ack.")
        msg = await rig.say("C1", ALICE, f"<@{BOT}> disk full?")
        await rig.wait_reply(msg, "Ack.")
        system = fake_llm.requests[0]["messages"][0]
        assert system["role"] == "system"
        assert system["content"].startswith(PROMPT)

        # Another channel keeps the default persona.
        other = await rig.say("C2", ALICE, f"<@{BOT}> disk full?")
        await rig.wait_reply(other, "Ack.")
        assert not fake_llm.requests[1]["messages"][0]["content"].startswith(PROMPT)


async def test_persona_admins_and_open_setting(base_env: dict[str, str], fake_llm: FakeLLM) -> None:
    async with slack_rig(base_env, fake_llm, PERSONA_ADMINS=BOB.id) as rig:
        assert (await rig.command("use pirate", user=BOB, channel="C1"))["text"].startswith(
            "This channel now uses"
        )
        refused = await rig.command("use pirate", user=ALICE, channel="C1")
        assert f"<@{BOB.id}>" in refused["text"]  # the refusal says who may
        shown = await rig.command("show", user=ALICE, channel="C1")  # anyone may look
        assert "pirate" in shown["text"]
    async with slack_rig(base_env, fake_llm, PERSONA_OPEN="true") as rig:
        assert (await rig.command("reset", user=ALICE, channel="C1"))["text"].startswith(
            "This channel is back"
        )
        # Open: Alice's rights were never looked up, only her name (once).
        lookups = [c for c in rig.fake.calls_to("users.info") if c.params["user"] == ALICE.id]
        assert len(lookups) == 1


async def test_forget_shortcut_and_mention_clear_the_thread(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        fake_llm.answer = Answer.of("Remembered.")
        first = await rig.say("C1", ALICE, f"<@{BOT}> remember 42")
        await rig.wait_reply(first, "Remembered.")
        reply = rig.fake.bot_replies("C1", first.ts)[0]

        envelope = await rig.fake.push_shortcut("forget_thread", reply, user=ALICE.id)
        await rig.fake.wait_ack(envelope)
        response = (await rig.fake.wait_for(lambda: rig.fake.responses))[0].body
        assert response["response_type"] == "ephemeral"
        assert response["text"].startswith("Done: I have forgotten")
        # The thread goes on, without what was said before.
        fake_llm.answer = Answer.of("Which number?")
        await rig.say("C1", ALICE, "what was the number?", thread_ts=first.ts)
        await rig.wait_reply(first, "Remembered.Which number?")
        assert fake_llm.requests[1]["messages"][1:] == [
            {"role": "user", "content": "Alice: what was the number?"}
        ]

        # `@bot forget` in the thread: an ephemeral confirmation, and no model call.
        await rig.say("C1", ALICE, f"<@{BOT}> forget", thread_ts=first.ts)
        confirmation = await rig.fake.wait_for(lambda: rig.fake.ephemeral)
        assert confirmation[0]["user"] == ALICE.id
        assert confirmation[0]["thread_ts"] == first.ts
        assert len(fake_llm.requests) == 2


async def test_persona_forget_explains_how_in_slack(base_env: dict[str, str], fake_llm: FakeLLM) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        reply = await rig.command("forget", user=ALICE, channel="C1")
        assert "Forget this thread" in reply["text"]


async def test_a_channels_fallback_chain_answers_when_its_model_is_down(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        done = await rig.command("fallback spare/model", user=ADMIN, channel="C1")
        assert done["text"] == "Done: fallback is now `spare/model` in this channel."
        fake_llm.fail_model("test/model", "503")
        fake_llm.answer = Answer.of("From the spare.")
        msg = await rig.say("C1", ALICE, f"<@{BOT}> disk full?")
        footnote = "_(Answered by `spare/model`: `test/model` could not answer just now.)_"
        await rig.wait_reply(msg, f"From the spare.\n\n{footnote}")
        assert [r["model"] for r in fake_llm.requests] == ["test/model", "test/model", "spare/model"]
