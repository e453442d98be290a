"""Sharding end to end: discord.py's sharded client on the fake Discord, which routes each
server's events to shard `(guild_id >> 22) % shard_count` and DMs to shard 0.

Several bots in one test stand for several processes: each has its own engine, Redis
connection, model server and discord.py client, and they share Redis (one prefix) as
replicas do; one test runs them as real `python -m bot run` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as redis

from adapters.discord import DiscordAdapter
from adapters.discord.surface import BOT_WINDOW
from bot.app.runtime import open_engine
from bot.app.service import Service
from bot.app.startup import explain
from bot.config import ConfigError, load_settings
from bot.contract.budgets import LeaseTaken
from bot.ops import metrics
from bot.ops.leases import Leases
from bot.ops.problems import CONFIG
from bot.state.keys import Keys
from bot.state.redis_store import RedisStore
from tests.fakes.discord import CLOSE_INVALID_SHARD, FakeDiscord, shard_of
from tests.fakes.discord_payloads import Channel, Guild, User
from tests.fakes.llm import Answer, FakeLLM
from tests.support.discord_fixtures import World, bot_env, discordpy_pointed_at, running_bot
from tests.support.helpers import bot_process, free_port, wait_until

SHARDS = 3



@pytest.fixture
async def sharded() -> AsyncIterator[tuple[World, list[tuple[Guild, Channel]]]]:
    """A fake Discord with one server on each of 3 shards."""
    async with FakeDiscord(recommended_shards=SHARDS) as fake:
        servers = []
        for shard in range(SHARDS):
            guild = fake.add_guild(f"server {shard}", shard=(shard, SHARDS))
            servers.append((guild, fake.add_text_channel(guild, "general")))
        first = servers[0][0]
        alice = fake.add_user("alice", guild=first)
        bob = fake.add_user("bob", guild=first)
        for guild, _ in servers[1:]:
            guild.members[alice.id] = alice
        yield World(fake, first, servers[0][1], alice, bob), servers


@contextlib.asynccontextmanager
async def model(text: str) -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        server.answer = Answer.of(text)
        yield server


def shards_delivered(fake: FakeDiscord, message_id: str) -> list[int]:
    return [shard for shard, event, id_ in fake.delivered if event == "MESSAGE_CREATE" and id_ == message_id]


async def ask_everywhere(
    fake: FakeDiscord, servers: list[tuple[Guild, Channel]], alice: User
) -> tuple[list[dict[str, object]], Channel]:
    """A mention in each server and a DM; returns the messages and the DM channel."""
    asked = [await fake.user_message(channel, alice, f"{fake.bot.mention} hi") for _, channel in servers]
    dm = fake.dm_channel(alice)
    asked.append(await fake.user_message(dm, alice, "hi in a DM"))
    return asked, dm


async def test_one_process_holds_three_shards_and_answers_each_event_once(
    sharded: tuple[World, list[tuple[Guild, Channel]]], base_env: dict[str, str]
) -> None:
    world, servers = sharded
    fake = world.fake
    metrics.reset()
    async with model("Answered.") as llm:
        env = {**bot_env(base_env, fake, llm), "DISCORD_SHARD_COUNT": str(SHARDS)}
        async with running_bot(world, llm, env) as rig:
            assert fake.connected_shards() == [(0, 3), (1, 3), (2, 3)]
            assert [i["shard"] for i in fake.identifies] == [[0, 3], [1, 3], [2, 3]]
            await wait_until(lambda: rig.adapter.connected, timeout=10)
            assert {name: check() for name, check in rig.adapter.part_checks().items()} == {
                "shard 0": True, "shard 1": True, "shard 2": True,
            }
            asked, dm = await ask_everywhere(fake, servers, world.alice)
            channels = [channel for _, channel in servers] + [dm]
            await wait_until(lambda: all(fake.bot_text(c) == "Answered." for c in channels), timeout=10)
            exposed = metrics.exposition()[0].decode()
        for shard, message in enumerate(asked):
            assert shards_delivered(fake, str(message["id"])) == [shard if shard < SHARDS else 0]
        assert len(llm.requests) == len(asked)
    assert all(len(fake.bot_messages(c)) == 1 for c in channels)
    for shard in range(SHARDS):
        assert f'chatbot_discord_shard_connected{{shard="{shard}"}} 1.0' in exposed
        assert f'chatbot_discord_shard_latency_seconds{{shard="{shard}"}}' in exposed


async def test_three_processes_with_one_shard_each_answer_only_their_own_events(
    sharded: tuple[World, list[tuple[Guild, Channel]]], base_env: dict[str, str],
    redis_client: redis.Redis, redis_prefix: str,
) -> None:
    world, servers = sharded
    fake = world.fake
    async with contextlib.AsyncExitStack() as stack:
        models = [await stack.enter_async_context(model(f"From shard {k}.")) for k in range(SHARDS)]
        for shard, llm in enumerate(models):
            env = {
                **bot_env(base_env, fake, llm),
                "DISCORD_SHARD_COUNT": str(SHARDS),
                "DISCORD_SHARD_IDS": str(shard),
            }
            await stack.enter_async_context(running_bot(world, llm, env))
        assert fake.connected_shards() == [(0, 3), (1, 3), (2, 3)]
        asked, dm = await ask_everywhere(fake, servers, world.alice)
        expected = {channel.id: f"From shard {k}." for k, (_, channel) in enumerate(servers)}
        expected[dm.id] = "From shard 0."  # DMs arrive on shard 0
        channels = [channel for _, channel in servers] + [dm]
        await wait_until(lambda: all(fake.bot_text(c) == expected[c.id] for c in channels), timeout=10)
        # Each process's model saw exactly its shard's questions: shard 0 its server's and the DM.
        assert [len(llm.requests) for llm in models] == [2, 1, 1]
        # Pacing is one budget for every shard: the bot-wide window in Redis counts the
        # writes of all three processes (at least the four posts).
        sent = Keys(redis_prefix).pace(BOT_WINDOW.scope)[0]
        posts = len(fake.calls_to("POST", "/channels/{channel_id}/messages"))
        assert posts == 4 and await redis_client.zcard(sent) >= posts
    assert all(len(fake.bot_messages(c)) == 1 for c in channels)
    for message in asked:
        guild_id = message.get("guild_id")
        assert shards_delivered(fake, str(message["id"])) == [shard_of(guild_id, SHARDS)]  # type: ignore[arg-type]


async def test_with_no_shard_settings_the_recommended_count_is_used(
    base_env: dict[str, str],
) -> None:
    async with FakeDiscord(recommended_shards=2) as fake, model("ok") as llm:
        guild = fake.add_guild()
        world = World(fake, guild, fake.add_text_channel(guild), fake.add_user("a"), fake.add_user("b"))
        async with running_bot(world, llm, bot_env(base_env, fake, llm)) as rig:
            assert rig.adapter.plan is not None and rig.adapter.plan.count == 2
            assert fake.connected_shards() == [(0, 2), (1, 2)]
            assert fake.calls_to("GET", "/gateway/bot")


async def test_a_second_process_claiming_a_held_shard_refuses_to_start_naming_it(
    sharded: tuple[World, list[tuple[Guild, Channel]]], base_env: dict[str, str],
    redis_client: redis.Redis, redis_prefix: str,
) -> None:
    world, _ = sharded
    fake = world.fake
    keys = Keys(redis_prefix)
    async with model("ok") as llm:
        first = {**bot_env(base_env, fake, llm), "DISCORD_SHARD_COUNT": "3", "DISCORD_SHARD_IDS": "0-1"}
        second = {**first, "DISCORD_SHARD_IDS": "1,2"}
        async with running_bot(world, llm, first):
            settings = load_settings(second, dotenv=False)
            async with open_engine(settings) as engine:
                adapter = DiscordAdapter(settings, engine, identify_spacing=0)
                with pytest.raises(ConfigError) as refused:
                    await adapter.start()
                await adapter.stop()
            # The second took nothing: shard 2 stays free, and it never connected.
            assert await redis_client.get(keys.lease("discord:shard:2")) is None
            assert fake.connected_shards() == [(0, 3), (1, 3)]
        # The first released its shards at shutdown.
        assert await redis_client.get(keys.lease("discord:shard:0")) is None
        async with running_bot(world, llm, second):
            assert fake.connected_shards() == [(1, 3), (2, 3)]
    message = str(refused.value)
    assert "Discord shard 1 is already held by another process" in message
    assert "DISCORD_SHARD_IDS" in message
    assert explain("discord", refused.value, settings).code == CONFIG


async def test_leases_are_renewed_while_held_and_a_crashed_holder_frees_them(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    store = RedisStore(redis_client, redis_prefix)
    key = store.keys.lease("discord:shard:0")
    alive = Leases(store, "alive", ttl=0.3)
    await alive.acquire(["discord:shard:0"])
    await asyncio.sleep(0.6)  # two lease lifetimes: only renewals keep it
    assert await redis_client.get(key) == "alive"
    with pytest.raises(LeaseTaken) as taken:
        await Leases(store, "other", ttl=0.3).acquire(["discord:shard:0"])
    assert taken.value.holder == "alive"
    assert alive.stop_renewing() is not None  # a crash: no more renewals, no release
    later = Leases(store, "later", ttl=0.3)
    await wait_until(lambda: later_takes(later), timeout=3)
    assert await redis_client.get(key) == "later"
    await later.release()
    assert await redis_client.get(key) is None


async def later_takes(leases: Leases) -> bool:
    try:
        await leases.acquire(["discord:shard:0"])
    except LeaseTaken:
        return False
    return True


@pytest.mark.parametrize("shard", [[3, 3], [0], "0,1", [-1, 2], [0, 0]])
async def test_the_fake_gateway_refuses_an_invalid_shard(shard: object) -> None:
    async with (
        FakeDiscord() as fake,
        aiohttp.ClientSession() as session,
        session.ws_connect(fake.gateway_url) as ws,
    ):
        await ws.receive()  # HELLO
        identify = {"token": fake.token, "intents": 0, "properties": {}, "shard": shard}
        await ws.send_str(json.dumps({"op": 2, "d": identify}))
        await ws.receive()
        assert ws.close_code == CLOSE_INVALID_SHARD


async def test_readyz_checks_each_shard_and_the_service_releases_them_at_shutdown(
    sharded: tuple[World, list[tuple[Guild, Channel]]], base_env: dict[str, str],
    redis_client: redis.Redis, redis_prefix: str,
) -> None:
    world, _ = sharded
    fake = world.fake
    async with model("ok") as llm:
        env = {**bot_env(base_env, fake, llm), "DISCORD_SHARD_COUNT": "3", "DISCORD_SHARD_IDS": "0,2"}
        settings = load_settings(env, dotenv=False)
        with discordpy_pointed_at(fake):
            async with open_engine(settings) as engine:
                adapter = DiscordAdapter(settings, engine, guild_ready_timeout=0.05, identify_spacing=0)
                service = Service(settings, engine, [adapter], health_port=0)
                stop = asyncio.Event()
                running = asyncio.create_task(service.run(stop))
                await wait_until(lambda: adapter.connected, timeout=10)
                readyz = f"http://127.0.0.1:{service.health_port}/readyz"
                async with aiohttp.ClientSession() as session, session.get(readyz) as reply:
                    body = await reply.json()
                assert reply.status == 200
                assert {k: v for k, v in body["checks"].items() if k.startswith("discord")} == {
                    "discord": "ok", "discord shard 0": "ok", "discord shard 2": "ok",
                }
                held = [Keys(redis_prefix).lease(f"discord:shard:{n}") for n in (0, 2)]
                assert all([await redis_client.get(key) for key in held])  # one by one: on a cluster
                stop.set()
                assert await asyncio.wait_for(running, 30) == 0
    assert [await redis_client.get(key) for key in held] == [None, None]


@dataclasses.dataclass
class FlakyLeases:
    """A lease store that is down until told otherwise, then held by `holder`."""

    down: bool = True
    holder: str | None = None

    async def hold_lease(self, name: str, holder: str, ttl_ms: int) -> str | None:
        if self.down:
            raise redis.ConnectionError("Redis is down")
        if self.holder not in (None, holder):
            return self.holder
        self.holder = holder
        return None

    async def release_lease(self, name: str, holder: str) -> None:
        if self.down:
            raise redis.ConnectionError("Redis is down")
        if self.holder == holder:
            self.holder = None


async def test_without_redis_a_shard_starts_unchecked_and_its_lease_is_taken_when_redis_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyLeases()
    leases = Leases(store, "me", ttl=60)
    await leases.acquire(["discord:shard:0"])  # does not raise: the bot runs without Redis
    assert "could not check the lease discord:shard:0" in caplog.text
    store.down = False
    await leases.renew()
    assert store.holder == "me"
    store.holder = "someone-else"  # took it while Redis was away from us
    await leases.renew()
    await leases.renew()
    assert caplog.text.count("is held by someone-else too") == 1  # said once, loudly
    await leases.release()
    assert store.holder == "someone-else"  # never releases what it does not hold


@pytest.mark.real_time  # the bots are processes of their own, on the wall clock
@pytest.mark.long
# Six processes on both backends cost 15 s of CPU: the leases on the cluster are the in-process
# test's above, what real processes add (settings, wiring, SIGTERM) is the same on either.
@pytest.mark.redis_only
async def test_three_real_processes_with_one_shard_each_answer_only_their_own_events(
    sharded: tuple[World, list[tuple[Guild, Channel]]], base_env: dict[str, str]
) -> None:
    """The same as above with `python -m bot run` as three real processes, as the StatefulSet
    runs them: each holds the shard DISCORD_SHARD_IDS names and answers only its events."""
    world, servers = sharded
    fake = world.fake
    async with contextlib.AsyncExitStack() as stack:
        models = [await stack.enter_async_context(model(f"From process {k}.")) for k in range(SHARDS)]
        bots = []
        for shard, llm in enumerate(models):
            env = {
                **bot_env(base_env, fake, llm),
                "DISCORD_SHARD_COUNT": str(SHARDS),
                "DISCORD_SHARD_IDS": str(shard),
                "HEALTH_PORT": str(free_port()),
            }
            bots.append(await stack.enter_async_context(bot_process("-m", "bot", "run", env=env)))
        await wait_until(lambda: fake.connected_shards() == [(0, 3), (1, 3), (2, 3)], timeout=30)
        asked, dm = await ask_everywhere(fake, servers, world.alice)
        expected = {channel.id: f"From process {k}." for k, (_, channel) in enumerate(servers)}
        expected[dm.id] = "From process 0."  # DMs arrive on shard 0
        channels = [channel for _, channel in servers] + [dm]
        await wait_until(lambda: all(fake.bot_text(c) == expected[c.id] for c in channels), timeout=30)
        assert [len(llm.requests) for llm in models] == [2, 1, 1]
        for bot in bots:
            bot.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(bot.wait(), 30) for bot in bots]
    assert codes == [0, 0, 0]
    assert all(len(fake.bot_messages(c)) == 1 for c in channels)
    for message in asked:
        guild_id = message.get("guild_id")
        assert shards_delivered(fake, str(message["id"])) == [shard_of(guild_id, SHARDS)]  # type: ignore[arg-type]
