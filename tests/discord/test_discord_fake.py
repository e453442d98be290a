"""The fake Discord speaks the protocol well enough for the real discord.py client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.fakes.discord import FakeDiscord, Limits, pings_anyone
from tests.fakes.discord_payloads import MANAGE_CHANNELS
from tests.support.discord_fixtures import World, discordpy_pointed_at, fake_discord, world
from tests.support.helpers import wait_until

__all__ = ["fake_discord", "world"]  # fixtures used by name

NO_PINGS = discord.AllowedMentions.none()


class EchoClient(discord.Client):
    """A tiny bot: replies 'echo: …' to every message it did not write; one slash command."""

    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(intents=intents, guild_ready_timeout=0.05, allowed_mentions=NO_PINGS)
        self.tree = app_commands.CommandTree(self)
        self.seen: list[discord.Message] = []

        @self.tree.command(name="hello", description="Say hello")
        async def hello(interaction: discord.Interaction, name: str) -> None:
            await interaction.response.send_message(f"hello {name}", ephemeral=True)

        @self.tree.command(name="slow", description="Answer after a defer")
        async def slow(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            await interaction.followup.send("done", ephemeral=True)

        @hello.autocomplete("name")
        async def names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return [
                app_commands.Choice(name=n, value=n) for n in ("ann", "anna", "bo") if n.startswith(current)
            ]

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        self.seen.append(message)
        if message.author != self.user:
            await message.reply(f"echo: {message.content}")


@pytest.fixture
async def client(world: World) -> AsyncIterator[EchoClient]:
    with discordpy_pointed_at(world.fake):
        bot = EchoClient()
        await bot.login(world.fake.token)
        task = asyncio.create_task(bot.connect())
        await asyncio.wait_for(bot.wait_until_ready(), 5)
        yield bot
        await bot.close()
        await task


async def test_login_ready_and_a_reply_round_trip(world: World, client: EchoClient) -> None:
    fake = world.fake
    assert client.user is not None and str(client.user.id) == fake.bot.id
    assert [c.name for c in client.guilds[0].text_channels] == ["general"]
    assert fake.identifies[0]["intents"] & (1 << 15), "message content intent asked for"

    sent = await fake.user_message(world.general, world.alice, f"{fake.bot.mention} hi there")
    await fake.wait_for(lambda: len(fake.bot_messages(world.general)) == 1)

    reply = fake.bot_messages(world.general)[0]
    assert reply["content"] == f"echo: {fake.bot.mention} hi there"
    assert reply["message_reference"]["message_id"] == sent["id"]
    (create,) = fake.calls_to("POST", "/channels/{channel_id}/messages")
    assert create.json["allowed_mentions"] == {"parse": []}
    assert not pings_anyone(create.json, is_reply=True)
    # Discord echoes the bot's own message back over the gateway.
    await wait_until(lambda: any(m.author == client.user for m in client.seen))
    seen = next(m for m in client.seen if m.author != client.user)
    assert seen.author.display_name == "Alice" and client.user in seen.mentions


async def test_history_fetch_and_edit_keep_what_users_see(world: World, client: EchoClient) -> None:
    fake = world.fake
    first = await fake.user_message(world.general, world.alice, "one")
    await fake.wait_for(lambda: len(fake.bot_messages(world.general)) == 1)
    await fake.user_message(world.general, world.bob, "two", reply_to=first)
    await fake.wait_for(lambda: len(fake.bot_messages(world.general)) == 2)

    channel = client.get_channel(int(world.general.id))
    assert isinstance(channel, discord.TextChannel)
    history = [m.content async for m in channel.history(limit=10, oldest_first=True)]
    assert history == ["one", "echo: one", "two", "echo: two"]
    fetched = await channel.fetch_message(int(first["id"]))
    assert fetched.author.id == int(world.alice.id)

    mine = fake.bot_messages(world.general)[0]
    await channel.get_partial_message(int(mine["id"])).edit(content="edited <@&1> @everyone")
    assert fake.message(world.general, mine["id"])["content"] == "edited <@&1> @everyone"
    (edit,) = fake.calls_to("PATCH", "/channels/{channel_id}/messages/{message_id}")
    assert not pings_anyone(edit.json, is_reply=False)
    assert pings_anyone({"content": "hi @everyone"}, is_reply=False)


async def test_threads_and_dms(world: World, client: EchoClient) -> None:
    fake = world.fake
    starter = await fake.user_message(world.general, world.alice, "start")
    thread = await fake.create_thread(world.general, world.alice, "topic", starter=starter)
    await wait_until(lambda: client.get_channel(int(thread.id)) is not None)
    await fake.user_message(thread, world.bob, "in thread")
    dm = fake.dm_channel(world.alice)
    await fake.user_message(dm, world.alice, "private")

    await fake.wait_for(lambda: fake.bot_messages(thread) and fake.bot_messages(dm))
    assert fake.bot_text(thread) == "echo: in thread"
    assert fake.bot_text(dm) == "echo: private"
    in_thread = next(m for m in client.seen if m.content == "in thread")
    assert isinstance(in_thread.channel, discord.Thread)
    assert in_thread.channel.parent_id == int(world.general.id)
    private = next(m for m in client.seen if m.content == "private")
    assert isinstance(private.channel, discord.DMChannel) and private.guild is None


async def test_slash_commands_sync_respond_defer_and_autocomplete(world: World, client: EchoClient) -> None:
    fake = world.fake
    assert {c["name"] for c in fake.commands[None]} == {"hello", "slow"}

    hello = await fake.slash_command(world.alice, world.general, "hello", options={"name": "ann"})
    assert await hello.answered() == "hello ann"
    assert hello.ephemeral and not hello.deferred

    slow = await fake.slash_command(world.alice, fake.dm_channel(world.alice), "slow")
    assert await slow.answered() == "done"
    assert slow.deferred and slow.ephemeral

    typed = await fake.slash_command(
        world.alice, world.general, "hello", options={"name": "an"}, focused="name"
    )
    await typed.answered()
    assert [c["value"] for c in typed.choices or []] == ["ann", "anna"]


async def test_interaction_members_carry_their_permissions(world: World, client: EchoClient) -> None:
    fake = world.fake
    fake.grant(world.guild, world.bob, MANAGE_CHANNELS)
    seen: list[discord.Permissions] = []

    async def check(interaction: discord.Interaction) -> bool:
        seen.append(interaction.permissions)
        return True

    client.tree.interaction_check = check  # type: ignore[method-assign]
    for user in (world.alice, world.bob):
        interaction = await fake.slash_command(user, world.general, "hello", options={"name": "x"})
        await interaction.answered()
    assert [p.manage_channels for p in seen] == [False, True]


async def test_rate_limits_answer_like_discord() -> None:
    # A window far longer than three posts take, even on a busy machine (nothing waits it out).
    window = 5.0
    limits = Limits(creates=2, edits=2, per_channel_seconds=window, global_per_second=50)
    async with FakeDiscord(limits=limits) as fake:
        guild = fake.add_guild()
        channel = fake.add_text_channel(guild)
        url = f"{fake.api_url}/channels/{channel.id}/messages"
        headers = {"Authorization": f"Bot {fake.token}"}
        async with aiohttp.ClientSession() as http:
            statuses = []
            for n in range(3):
                async with http.post(url, json={"content": f"m{n}"}, headers=headers) as response:
                    statuses.append(response.status)
                    last_headers, last_body = response.headers, await response.json()
        assert statuses == [200, 200, 429]
        assert last_headers["Content-Type"] == "application/json"
        assert last_headers["Via"] and last_headers["X-RateLimit-Remaining"] == "0"
        assert float(last_headers["X-RateLimit-Reset-After"]) <= window
        assert last_body["global"] is False and 0 < last_body["retry_after"] <= window
        assert [m["content"] for m in fake.bot_messages(channel)] == ["m0", "m1"]
        assert len(fake.rate_limited) == 1


async def test_discordpy_waits_out_429s_and_every_message_lands() -> None:
    limits = Limits(creates=2, edits=2, per_channel_seconds=0.3, global_per_second=50)
    async with FakeDiscord(limits=limits) as fake:
        guild = fake.add_guild()
        channel = fake.add_text_channel(guild)
        with discordpy_pointed_at(fake):
            bot = EchoClient()
            await bot.login(fake.token)
            target = bot.get_partial_messageable(int(channel.id))
            async with aiohttp.ClientSession() as http:  # someone else spends the bucket first
                for _ in range(2):
                    await http.post(
                        f"{fake.api_url}/channels/{channel.id}/messages",
                        json={"content": "x"},
                        headers={"Authorization": f"Bot {fake.token}"},
                    )
            started = time.monotonic()
            for n in range(5):
                await target.send(f"n{n}")
            elapsed = time.monotonic() - started
            await bot.close()
    assert [m["content"] for m in fake.bot_messages(channel)][2:] == [f"n{n}" for n in range(5)]
    assert len(fake.rate_limited) >= 1, "discord.py met at least one 429 and retried it"
    assert elapsed >= 0.3 * 2, "it waited for the windows rather than failing"


async def test_refused_message_content_intent_closes_with_4014() -> None:
    async with FakeDiscord(message_content_allowed=False) as fake:
        fake.add_guild()
        with discordpy_pointed_at(fake):
            bot = EchoClient()
            await bot.login(fake.token)
            with pytest.raises(discord.PrivilegedIntentsRequired):
                await asyncio.wait_for(bot.connect(), 5)
            await bot.close()


async def test_bad_token_fails_login() -> None:
    async with FakeDiscord() as fake:
        with discordpy_pointed_at(fake):
            bot = EchoClient()
            with pytest.raises(discord.LoginFailure):
                await bot.login("not-the-token")
            await bot.close()


async def test_late_interaction_response_is_unknown(world: World, client: EchoClient) -> None:
    fake = world.fake
    interaction = await fake.slash_command(world.alice, world.general, "hello", options={"name": "x"})
    await interaction.answered()
    assert not interaction.late
    # Re-answering is refused as on Discord.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{fake.api_url}/interactions/{interaction.id}/{interaction.token}/callback",
            json={"type": 4, "data": {"content": "again"}},
        ) as response,
    ):
        assert response.status == 400
        assert (await response.json())["code"] == 40060
