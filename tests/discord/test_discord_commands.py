"""End to end: /persona and /forget as Discord slash commands."""

from __future__ import annotations

import pytest

from adapters.discord import commands
from tests.fakes.discord_payloads import MANAGE_CHANNELS, Channel
from tests.fakes.llm import Answer, FakeLLM
from tests.support.discord_fixtures import (
    Rig,
    World,
    bot_env,
    fake_discord,
    llm,
    rig,
    running_bot,
    world,
)
from tests.support.helpers import wait_until

__all__ = ["fake_discord", "llm", "rig", "world"]  # fixtures used by name

REFUSAL = "only members with the Manage Channels permission may change"


async def ask(rig: Rig, channel: Channel, text: str) -> list[dict[str, str]]:
    """Mention the bot with `text`, wait for the answer, return the model request's messages."""
    count = len(rig.llm.requests)
    await rig.fake.user_message(channel, rig.world.alice, f"{rig.fake.bot.mention} {text}")
    await wait_until(lambda: len(rig.llm.requests) > count, timeout=10)
    await wait_until(lambda: rig.engine.live_answers == 0, timeout=10)
    return rig.last_prompt()


async def test_commands_are_registered_on_start_with_their_permissions(rig: Rig) -> None:
    registered = {c["name"]: c for c in rig.fake.commands[None]}
    assert set(registered) == {"persona", "forget", "Forget this conversation", "summarize", "Summarize"}
    assert registered["Forget this conversation"]["type"] == 3  # a message context menu
    assert registered["Summarize"]["type"] == 3
    persona = registered["persona"]
    assert persona["default_member_permissions"] == str(MANAGE_CHANNELS)
    assert sorted(persona["contexts"]) == [0, 1]  # servers and DMs with the bot
    subcommands = {o["name"]: o for o in persona["options"]}
    assert set(subcommands) >= {"show", "list", "use", "set", "reset", "model", "temperature"}
    (preset,) = subcommands["use"]["options"]
    assert preset["autocomplete"] is True
    (value,) = subcommands["temperature"]["options"]
    assert (value["min_value"], value["max_value"], value["required"]) == (0.0, 2.0, False)


async def test_persona_set_needs_manage_channels(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    refused = await fake.slash_command(
        w.alice, w.general, "persona", subcommand="set", options={"prompt": "You are a pirate."}
    )
    assert REFUSAL in await refused.answered()
    assert refused.ephemeral and not refused.late
    assert "You are a pirate." not in (await ask(rig, w.general, "hi"))[0]["content"]

    fake.grant(w.guild, w.bob, MANAGE_CHANNELS)
    accepted = await fake.slash_command(
        w.bob, w.general, "persona", subcommand="set", options={"prompt": "You are a pirate."}
    )
    assert "Done" in await accepted.answered()
    assert accepted.ephemeral
    system = (await ask(rig, w.general, "hi again"))[0]
    assert system["role"] == "system" and system["content"].startswith("You are a pirate.")


async def test_persona_admins_may_change_without_the_permission(
    world: World, llm: FakeLLM, base_env: dict[str, str]
) -> None:
    env = {**bot_env(base_env, world.fake, llm), "PERSONA_ADMINS": world.alice.id}
    async with running_bot(world, llm, env) as rig:
        done = await world.fake.slash_command(
            world.alice, world.general, "persona", subcommand="temperature", options={"value": 0.3}
        )
        assert "temperature is now `0.3`" in await done.answered()
        await ask(rig, world.general, "hi")
        assert rig.llm.requests[-1]["temperature"] == 0.3
        refused = await world.fake.slash_command(world.bob, world.general, "persona", subcommand="reset")
        assert "(or listed in PERSONA_ADMINS)" in await refused.answered()


async def test_preset_autocomplete_and_use(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    fake.grant(w.guild, w.alice, MANAGE_CHANNELS)
    typed = await fake.slash_command(
        w.alice, w.general, "persona", subcommand="use", options={"preset": "pir"}, focused="preset"
    )
    await typed.answered()
    assert [c["value"] for c in typed.choices or []] == ["pirate"]

    used = await fake.slash_command(
        w.alice, w.general, "persona", subcommand="use", options={"preset": "pirate"}
    )
    assert "`pirate`" in await used.answered()
    shown = await fake.slash_command(w.bob, w.general, "persona", subcommand="show")
    assert "preset `pirate`" in await shown.answered()
    system = (await ask(rig, w.general, "ahoy"))[0]["content"]
    assert rig.engine.presets["pirate"].system_prompt in system


async def test_persona_in_a_dm_is_the_dm_owners(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    dm = fake.dm_channel(w.alice)
    done = await fake.slash_command(
        w.alice, dm, "persona", subcommand="set", options={"prompt": "You speak French."}
    )
    assert "Done" in await done.answered()
    rig.llm.answer = Answer.of("Bonjour.")
    await fake.user_message(dm, w.alice, "hello")
    await wait_until(lambda: rig.llm.requests and rig.engine.live_answers == 0, timeout=10)
    assert rig.last_prompt()[0]["content"].startswith("You speak French.")
    # The server channel keeps its own persona.
    assert not (await ask(rig, w.general, "hi"))[0]["content"].startswith("You speak French.")


async def test_forget_clears_a_dm(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    dm = fake.dm_channel(w.alice)
    rig.llm.answer = Answer.of("Noted: blue.")
    await fake.user_message(dm, w.alice, "my favourite colour is blue")
    await wait_until(lambda: rig.llm.requests and rig.engine.live_answers == 0, timeout=10)

    forgot = await fake.slash_command(w.alice, dm, "forget")
    assert "forgotten" in await forgot.answered()
    assert forgot.ephemeral

    await fake.user_message(dm, w.alice, "what is my favourite colour?")
    await wait_until(lambda: len(rig.llm.requests) == 2 and rig.engine.live_answers == 0, timeout=10)
    assert [m["role"] for m in rig.last_prompt()] == ["system", "user"]
    assert "blue" not in rig.last_prompt()[1]["content"]


async def test_forget_in_a_channel_forgets_your_last_conversation_there(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    await ask(rig, w.general, "remember 42")
    answer = fake.bot_messages(w.general)[0]
    forgot = await fake.slash_command(w.alice, w.general, "forget")
    assert "forgotten" in await forgot.answered()

    await fake.user_message(w.general, w.alice, "what number?", reply_to=answer)
    await wait_until(lambda: len(rig.llm.requests) == 2 and rig.engine.live_answers == 0, timeout=10)
    assert [m["role"] for m in rig.last_prompt()] == ["system", "user"]


async def test_slow_commands_are_deferred_then_answered(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "DEFER_AFTER", 0.0)
    shown = await rig.fake.slash_command(rig.world.alice, rig.world.general, "persona", subcommand="show")
    assert "This channel uses" in await shown.answered()
    assert shown.deferred and shown.ephemeral and not shown.late
    assert shown.followups, "the answer came as a follow-up after the defer"


async def test_forget_this_conversation_from_a_message_menu(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    await ask(rig, w.general, "remember 42")
    rig.llm.answer = Answer.of("Still 42.")
    await fake.user_message(w.general, w.bob, "still?", reply_to=fake.bot_messages(w.general)[0])
    await wait_until(lambda: len(rig.llm.requests) == 2 and rig.engine.live_answers == 0, timeout=10)
    assert len(rig.last_prompt()) == 4  # system, question, answer, follow-up
    later = fake.bot_messages(w.general)[1]

    forgot = await fake.message_command(w.bob, w.general, "Forget this conversation", later)
    assert "forgotten" in await forgot.answered()
    assert forgot.ephemeral

    await fake.user_message(w.general, w.alice, "what number?", reply_to=later)
    await wait_until(lambda: len(rig.llm.requests) == 3 and rig.engine.live_answers == 0, timeout=10)
    assert [m["role"] for m in rig.last_prompt()] == ["system", "user"]


async def test_persona_fallback_as_a_slash_command(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    fake.grant(w.guild, w.alice, MANAGE_CHANNELS)
    done = await fake.slash_command(
        w.alice, w.general, "persona", subcommand="fallback", options={"models": "a/one, b/two"}
    )
    assert "fallback is now `a/one,b/two`" in await done.answered()
    shown = await fake.slash_command(w.bob, w.general, "persona", subcommand="show")
    assert "fallback: `a/one`, `b/two`" in await shown.answered()
    wrong = await fake.slash_command(
        w.alice, w.general, "persona", subcommand="fallback", options={"models": "a one"}
    )
    assert "comma separated" in await wrong.answered()
    refused = await fake.slash_command(
        w.bob, w.general, "persona", subcommand="fallback", options={"models": "off"}
    )
    assert "only members with the Manage Channels permission" in await refused.answered()


async def test_persona_summary_prompt_as_a_slash_command(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    fake.grant(w.guild, w.alice, MANAGE_CHANNELS)
    done = await fake.slash_command(
        w.alice, w.general, "persona", subcommand="summary", options={"prompt": "In French, three bullets"}
    )
    assert "summary_prompt is now `In French, three bullets`" in await done.answered()
    shown = await fake.slash_command(w.bob, w.general, "persona", subcommand="show")
    assert "summary prompt: In French, three bullets" in await shown.answered()
    back = await fake.slash_command(
        w.alice, w.general, "persona", subcommand="summary", options={"prompt": "default"}
    )
    assert "summary_prompt is now the default" in await back.answered()
    shown = await fake.slash_command(w.bob, w.general, "persona", subcommand="show")
    assert "summary prompt" not in await shown.answered()
