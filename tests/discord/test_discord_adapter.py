"""End to end: starting, checking and inviting the Discord bot; threads mode; duplicate events."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import discord
import pytest

from adapters.discord import DiscordAdapter, invite_url
from adapters.discord.check import check
from bot.app.runtime import open_engine
from bot.config import ConfigError, load_settings
from bot.contract import ConversationKey
from bot.ops.problems import CheckFailed
from tests.fakes.discord import FakeDiscord
from tests.fakes.llm import Answer, FakeLLM
from tests.support.discord_fixtures import (
    Rig,
    World,
    bot_env,
    discordpy_pointed_at,
    fake_discord,
    llm,
    rig,
    running_bot,
    world,
)
from tests.support.helpers import wait_until

__all__ = ["fake_discord", "llm", "rig", "world"]  # fixtures used by name


def test_invite_url_has_exactly_the_scopes_and_permissions_needed() -> None:
    url = urlsplit(invite_url(1234567890))
    assert (url.scheme, url.netloc, url.path) == ("https", "discord.com", "/oauth2/authorize")
    query = parse_qs(url.query)
    assert query["client_id"] == ["1234567890"]
    assert query["scope"] == ["bot applications.commands"]
    granted = discord.Permissions(int(query["permissions"][0]))
    assert granted == discord.Permissions(
        view_channel=True,
        send_messages=True,
        send_messages_in_threads=True,
        create_public_threads=True,
        read_message_history=True,
    )


async def test_start_connects_with_the_intents_and_stop_disconnects(rig: Rig) -> None:
    assert rig.adapter.connected
    intents = discord.Intents._from_value(rig.fake.identifies[-1]["intents"])
    assert intents == discord.Intents(
        guilds=True, guild_messages=True, dm_messages=True, message_content=True
    )
    await rig.adapter.stop()
    assert not rig.adapter.connected


async def test_a_refused_message_content_intent_says_how_to_fix_it(
    llm: FakeLLM, base_env: dict[str, str]
) -> None:
    async with FakeDiscord(message_content_allowed=False) as fake:
        fake.add_guild()
        settings = load_settings(bot_env(base_env, fake, llm), dotenv=False)
        with discordpy_pointed_at(fake):
            async with open_engine(settings) as engine:
                adapter = DiscordAdapter(settings, engine, guild_ready_timeout=0.05, identify_spacing=0)
                with pytest.raises(ConfigError) as refused:
                    await adapter.start()
                await adapter.stop()
            with pytest.raises(CheckFailed) as failed:
                await check(settings)
    for message in (str(refused.value), str(failed.value)):
        assert "Message Content intent" in message
        assert f"https://discord.com/developers/applications/{fake.application_id}/bot" in message
        assert "MESSAGE CONTENT INTENT" in message
        assert fake.token not in message


async def test_a_wrong_token_is_refused_clearly(llm: FakeLLM, base_env: dict[str, str]) -> None:
    async with FakeDiscord() as fake:
        env = {**bot_env(base_env, fake, llm), "DISCORD_BOT_TOKEN": "discord-wrong-token"}
        settings = load_settings(env, dotenv=False)
        with discordpy_pointed_at(fake):
            async with open_engine(settings) as engine:
                adapter = DiscordAdapter(settings, engine)
                with pytest.raises(ConfigError, match="refused DISCORD_BOT_TOKEN"):
                    await adapter.start()
            with pytest.raises(CheckFailed, match="refused DISCORD_BOT_TOKEN") as failed:
                await check(settings)
    assert "discord-wrong-token" not in str(failed.value)


async def test_check_reports_the_invite_url(world: World, llm: FakeLLM, base_env: dict[str, str]) -> None:
    settings = load_settings(bot_env(base_env, world.fake, llm), dotenv=False)
    with discordpy_pointed_at(world.fake):
        detail = await check(settings)
    assert "logged in as chatbot" in detail
    assert invite_url(world.fake.application_id) in detail


async def test_guild_sync_registers_commands_in_that_server(
    world: World, llm: FakeLLM, base_env: dict[str, str]
) -> None:
    env = {**bot_env(base_env, world.fake, llm), "DISCORD_GUILD_ID": world.guild.id}
    async with running_bot(world, llm, env) as rig:
        names = {c["name"] for c in rig.fake.commands[world.guild.id]}
        assert names == {"persona", "forget", "Forget this conversation", "summarize", "Summarize"}
        shown = await rig.fake.slash_command(world.alice, world.general, "persona", subcommand="show")
        assert "This channel uses" in await shown.answered()


async def test_threads_mode_answers_in_a_new_thread(
    world: World, llm: FakeLLM, base_env: dict[str, str]
) -> None:
    env = {**bot_env(base_env, world.fake, llm), "DISCORD_THREADS": "true"}
    async with running_bot(world, llm, env) as rig:
        fake = rig.fake
        llm.answer = Answer.of("In a thread.")
        asked = await fake.user_message(world.general, world.alice, f"{fake.bot.mention} how do I deploy?")
        await wait_until(lambda: llm.requests and rig.engine.live_answers == 0, timeout=10)
        thread = fake.channels[asked["id"]]  # a thread opened on a message takes its id
        assert thread.is_thread and thread.name == "how do I deploy?"
        assert [m["content"] for m in fake.bot_messages(thread)] == ["In a thread."]
        assert fake.bot_messages(world.general) == []

        llm.answer = Answer.of("Follow-up.")
        await fake.user_message(thread, world.alice, "and then?")
        await wait_until(lambda: len(llm.requests) == 2 and rig.engine.live_answers == 0, timeout=10)
        assert [(m["role"], m["content"]) for m in llm.requests[-1]["messages"][1:]] == [
            ("user", "Alice: how do I deploy?"),
            ("assistant", "In a thread."),
            ("user", "Alice: and then?"),
        ]


async def test_a_message_delivered_twice_is_answered_once(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    asked = await fake.user_message(w.general, w.alice, f"{fake.bot.mention} once please")
    await fake.dispatch("MESSAGE_CREATE", asked)  # as after a gateway resume
    await fake.user_message(w.general, w.bob, f"{fake.bot.mention} and me")
    await wait_until(lambda: len(rig.llm.requests) >= 2 and rig.engine.live_answers == 0, timeout=10)
    assert len(rig.llm.requests) == 2
    assert len(fake.bot_messages(w.general)) == 2


async def test_surface_for_reaches_messages_posted_before_a_restart(rig: Rig) -> None:
    """The core marks answers cut by a crash through `surface_for`: in a channel and a thread."""
    fake, w = rig.fake, rig.world
    asked = await fake.user_message(w.general, w.alice, f"{fake.bot.mention} in the channel")
    starter = await fake.user_message(w.general, w.bob, "topic")
    thread = await fake.create_thread(w.general, w.bob, "topic", starter=starter)
    await wait_until(lambda: rig.adapter.client.get_channel(int(thread.id)) is not None)
    await fake.user_message(thread, w.bob, f"{fake.bot.mention} in the thread")
    await wait_until(lambda: len(rig.llm.requests) == 2 and rig.engine.live_answers == 0, timeout=10)

    chain = ConversationKey("discord", w.guild.id, w.general.id, asked["id"])
    in_thread = ConversationKey("discord", w.guild.id, w.general.id, thread.id)
    for channel, conversation in ((w.general, chain), (thread, in_thread)):
        (answer,) = fake.bot_messages(channel)
        surface = await rig.adapter.surface_for(conversation, answer["id"])
        assert surface is not None
        await surface.edit(answer["id"], "cut short")
        assert fake.message(channel, answer["id"])["content"] == "cut short"
    slack_key = ConversationKey("slack", "T1", "C1", "1.2")
    assert await rig.adapter.surface_for(slack_key, "1") is None


async def test_surface_for_finds_a_thread_gone_from_the_cache(rig: Rig) -> None:
    """After a restart an archived thread is not cached: it is fetched from Discord."""
    fake, w = rig.fake, rig.world
    starter = await fake.user_message(w.general, w.bob, "topic")
    thread = await fake.create_thread(w.general, w.bob, "topic", starter=starter)
    await wait_until(lambda: rig.adapter.client.get_channel(int(thread.id)) is not None)
    await fake.user_message(thread, w.bob, f"{fake.bot.mention} in the thread")
    await wait_until(lambda: len(rig.llm.requests) == 1 and rig.engine.live_answers == 0, timeout=10)
    guild = rig.adapter.client.get_guild(int(w.guild.id))
    assert guild is not None
    cached = guild.get_thread(int(thread.id))
    assert cached is not None
    guild._remove_thread(cached)  # as if the process had just started
    assert rig.adapter.client.get_channel(int(thread.id)) is None

    (answer,) = fake.bot_messages(thread)
    in_thread = ConversationKey("discord", w.guild.id, w.general.id, thread.id)
    surface = await rig.adapter.surface_for(in_thread, answer["id"])
    assert surface is not None
    await surface.edit(answer["id"], "cut short")
    assert fake.message(thread, answer["id"])["content"] == "cut short"
