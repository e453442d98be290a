"""Fixtures for the Discord tests: the fake Discord, and discord.py pointed at it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import discord
import pytest
import yarl

from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_payloads import Channel, Guild, User


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
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


@pytest.fixture
def world(fake_discord: FakeDiscord) -> World:
    guild = fake_discord.add_guild("Test Server")
    general = fake_discord.add_text_channel(guild, "general")
    alice = fake_discord.add_user("alice", guild=guild)
    bob = fake_discord.add_user("bob", guild=guild)
    return World(fake_discord, guild, general, alice, bob)
