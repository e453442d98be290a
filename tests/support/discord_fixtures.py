"""Fixtures for the Discord tests: the fake Discord, discord.py pointed at it, the running bot."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import discord
import pytest
import yarl

from adapters.discord import DiscordAdapter
from bot.app.runtime import open_engine
from bot.config import Settings, load_settings
from bot.engine import Engine
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_payloads import Channel, Guild, User
from tests.fakes.llm import FakeLLM
from tests.support.clock import FastClock


@contextlib.contextmanager
def discordpy_pointed_at(fake: FakeDiscord) -> Iterator[None]:
    """Make discord.py talk to `fake` (process-wide class attributes), and restore them after."""
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway


@dataclass
class World:
    """One server with a channel and a few people, plus the fake it lives in."""

    fake: FakeDiscord
    guild: Guild
    general: Channel
    alice: User
    bob: User


@pytest.fixture
async def fake_discord(clock: FastClock) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(clock=clock) as fake:
        yield fake


@pytest.fixture
def world(fake_discord: FakeDiscord) -> World:
    guild = fake_discord.add_guild("Test Server")
    general = fake_discord.add_text_channel(guild, "general")
    alice = fake_discord.add_user("alice", guild=guild)
    bob = fake_discord.add_user("bob", guild=guild)
    return World(fake_discord, guild, general, alice, bob)


@dataclass
class Rig:
    """The bot running for real: discord.py on the fake Discord, the core on Redis + fake model."""

    world: World
    llm: FakeLLM
    adapter: DiscordAdapter
    engine: Engine
    settings: Settings

    @property
    def fake(self) -> FakeDiscord:
        return self.world.fake

    def last_prompt(self) -> list[dict[str, str]]:
        """The messages of the latest model request."""
        return list(self.llm.requests[-1]["messages"])


def bot_env(base_env: dict[str, str], fake: FakeDiscord, llm: FakeLLM) -> dict[str, str]:
    return {
        **base_env,
        "TOGETHER_BASE_URL": llm.url,
        "LLM_MAX_RETRIES": "0",
        "DISCORD_BOT_TOKEN": fake.token,
        "DISCORD_API_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
    }


@contextlib.asynccontextmanager
async def running_bot(world: World, llm: FakeLLM, env: dict[str, str]) -> AsyncIterator[Rig]:
    """Start the Discord adapter with `env`; stop it (and every answer in flight) after."""
    settings = load_settings(env, dotenv=False)
    world.fake.clock = llm.clock  # one time for the bot and every fake (tests/support/clock.py)
    with discordpy_pointed_at(world.fake):
        async with open_engine(settings, llm.clock) as engine:
            adapter = DiscordAdapter(settings, engine, guild_ready_timeout=0.05, identify_spacing=0)
            await adapter.start()
            try:
                yield Rig(world, llm, adapter, engine, settings)
            finally:
                await engine.drain(5.0)
                await adapter.stop()


@pytest.fixture
async def llm(clock: FastClock) -> AsyncIterator[FakeLLM]:
    async with FakeLLM(clock=clock) as server:
        yield server


@pytest.fixture
async def rig(world: World, llm: FakeLLM, base_env: dict[str, str]) -> AsyncIterator[Rig]:
    async with running_bot(world, llm, bot_env(base_env, world.fake, llm)) as running:
        yield running
