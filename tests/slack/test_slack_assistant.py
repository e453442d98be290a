"""Slack's AI app surface (the assistant panel), end to end with the real slack-bolt on the fake:
a thread started → greeting, suggested prompts from the persona, title from the first question;
the channel the person looks at reaches the model with the next question."""

from __future__ import annotations

from adapters.slack.assistant import GREETING
from bot.conversations.personas import load_presets
from tests.fakes.llm import Answer, FakeLLM
from tests.support.slack_fixtures import ALICE, slack_rig

DM = "D0ALICE"


async def test_thread_started_greets_offers_prompts_and_the_first_question_titles_it(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(6)
    async with slack_rig(base_env, fake_llm) as rig:
        root, started = rig.fake.assistant_thread(ALICE.id, DM, looking_at=None)
        await rig.deliver(started)
        key = (DM, root.ts)
        prompts = await rig.fake.wait_for(lambda: rig.fake.suggested.get(key))
        # The DM has no persona of its own: the default preset's prompts.
        assert [p["message"] for p in prompts] == list(load_presets()["assistant"].prompts)
        (greeting,) = rig.fake.bot_replies(DM, root.ts)
        assert greeting.visible == GREETING
        # A redelivery of the event does nothing twice.
        await rig.deliver(started, event_id=None)
        assert len(rig.fake.bot_replies(DM, root.ts)) == 1

        question = await rig.say(DM, ALICE, "How do I   rotate an API key?", thread_ts=root.ts)
        await rig.wait_reply(question, GREETING + fake_llm.answer.text)
        assert rig.fake.titles[key] == "How do I rotate an API key?"
        assert fake_llm.requests[-1]["messages"][-1]["content"].endswith("How do I rotate an API key?")
        # Only the first question titles the thread.
        again = await rig.say(DM, ALICE, "and another", thread_ts=root.ts)
        await rig.wait_reply(again, GREETING + fake_llm.answer.text * 2)
        assert len(rig.fake.calls_to("assistant.threads.setTitle")) == 1
        # The panel's status line is the one the surface shows while the model works.
        assert all(c.params["channel_id"] == DM for c in rig.fake.calls_to("assistant.threads.setStatus"))


async def test_a_persona_with_its_own_preset_suggests_its_prompts(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    async with slack_rig(base_env, fake_llm, PERSONA_OPEN="true") as rig:
        await rig.command("use sre", user=ALICE, channel=DM)
        root, started = rig.fake.assistant_thread(ALICE.id, DM, looking_at=None)
        await rig.deliver(started)
        prompts = await rig.fake.wait_for(lambda: rig.fake.suggested.get((DM, root.ts)))
        assert [p["message"] for p in prompts] == list(load_presets()["sre"].prompts)


async def test_context_change_reaches_the_next_model_request(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(4)
    async with slack_rig(base_env, fake_llm) as rig:
        rig.fake.channel_info["C0OPS"] = {
            "name": "ops-incidents", "topic": {"value": "Sev1 in progress"},
            "purpose": {"value": "Incidents"},
        }
        rig.fake.channel_info["C0FUN"] = {"name": "random", "topic": {"value": ""}, "purpose": {"value": ""}}
        root, started = rig.fake.assistant_thread(ALICE.id, DM, looking_at="C0FUN")
        await rig.deliver(started)
        await rig.fake.wait_for(lambda: rig.fake.suggested.get((DM, root.ts)))
        changed = rig.fake.assistant_event("assistant_thread_context_changed", ALICE.id, root, "C0OPS")
        await rig.deliver(changed)
        await rig.wait_looking_at(DM, root.ts, "C0OPS")

        question = await rig.say(DM, ALICE, "what is going on here?", thread_ts=root.ts)
        await rig.wait_reply(question, GREETING + fake_llm.answer.text)
        system = fake_llm.requests[-1]["messages"][0]
        assert system["role"] == "system"
        assert "#ops-incidents" in system["content"] and "Sev1 in progress" in system["content"]
        assert "#random" not in system["content"]
