"""Token usage per channel and per user per day; `python -m bot usage`; Redis trips per turn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as redis

from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.engine import Engine
from bot.ops.upkeep import Upkeep
from bot.ops.usage import USAGE_TTL_DAYS, today
from tests.fakes.llm import Answer, FakeLLM
from tests.support.cli import cli_process, run_cli
from tests.support.core import ALICE, BOB, turn
from tests.support.helpers import RoundTrips

# Some of these bots run the command line (its own engine, on the wall clock), so the fakes
# are on the wall clock too (tests/support/clock.py).
pytestmark = pytest.mark.real_time


@asynccontextmanager
async def engine_with(env: dict[str, str], **settings: str) -> AsyncIterator[Engine]:
    async with open_engine(load_settings(env | settings, dotenv=False)) as engine:
        yield engine


async def test_usage_is_kept_per_channel_and_user_per_day_with_a_ttl(
    engine: Engine, fake_llm: FakeLLM, redis_client: redis.Redis, redis_prefix: str
) -> None:
    fake_llm.answer = Answer.words(7)
    first = await engine.answer(turn("hello", author=ALICE))
    await engine.answer(turn("hi", author=BOB, thread="t2"))
    await engine.answer(turn("hey", author=ALICE, channel="C2"))

    channels = await redis_client.hgetall(f"{redis_prefix}:usage:{today()}:channel")
    assert channels["test:W1:C1|out"] == "14" and channels["test:W1:C1|answers"] == "2"
    assert channels["test:W1:C2|out"] == "7"
    assert int(channels["test:W1:C1|in"]) > first.tokens_in > 0  # both answers
    users = await redis_client.hgetall(f"{redis_prefix}:usage:{today()}:user")
    assert users["test:U1|out"] == "14" and users["test:U2|out"] == "7"
    assert await redis_client.hget(f"{redis_prefix}:usage:names", "test:U1") == "Alice"
    ttl = await redis_client.ttl(f"{redis_prefix}:usage:{today()}:channel")
    assert (USAGE_TTL_DAYS - 1) * 86400 < ttl <= USAGE_TTL_DAYS * 86400


async def test_failed_answers_spend_nothing(
    engine: Engine, fake_llm: FakeLLM, redis_client: redis.Redis, redis_prefix: str
) -> None:
    fake_llm.fail_next("401")
    await engine.answer(turn("hello"))
    assert not await redis_client.exists(f"{redis_prefix}:usage:{today()}:channel")


async def test_a_cut_stream_counts_an_estimate(
    engine: Engine, fake_llm: FakeLLM, redis_client: redis.Redis, redis_prefix: str
) -> None:
    """The model sends usage only at the end; a cut answer still spent tokens."""
    fake_llm.answer = Answer.words(40)
    fake_llm.fail_next("cut")
    outcome = await engine.answer(turn("hello"))
    assert outcome.outcome == "interrupted"
    assert outcome.tokens_in > 0 and outcome.tokens_out > 0
    channels = await redis_client.hgetall(f"{redis_prefix}:usage:{today()}:channel")
    assert int(channels["test:W1:C1|out"]) == outcome.tokens_out


async def test_usage_command_prints_days_channels_and_users(
    engine: Engine, engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(10)
    await engine.answer(turn("hello", author=ALICE))
    await engine.answer(turn("hello", author=BOB, channel="C2"))
    await engine.answer(turn("again", author=ALICE, thread="t2"))

    code, out, err = await cli_process(["usage", "--days", "3"], engine_env)  # the real entry point
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Token usage, ") and "(UTC days)" in lines[0]
    day_row = next(line for line in lines if line.startswith(today()))
    assert day_row.split()[1] == "3"  # answers today
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[1] == "3" and total.split()[3] == "30"  # 3 answers, 30 tokens out
    channel = next(line for line in lines if line.startswith("test:W1:C1"))
    assert channel.split()[1:2] == ["2"] and channel.split()[3] == "20"
    alice = next(line for line in lines if line.startswith("Alice (test:U1)"))
    assert alice.split()[2] == "2"
    assert any(line.startswith("Bob (test:U2)") for line in lines)
    # The busiest channel comes first.
    assert out.index("test:W1:C1") < out.index("test:W1:C2")
    persona = next(line for line in lines if line.startswith("default "))  # no persona set: the default
    assert persona.split()[1] == "3" and persona.split()[3] == "30"
    assert "tool server" not in out  # no tool calls: no per-server section


async def test_usage_command_with_nothing_and_bad_input(engine_env: dict[str, str]) -> None:
    code, out, _ = await run_cli(["usage"], engine_env)
    assert code == 0 and "No answers in this period." in out
    code, _, err = await run_cli(["usage", "--days", "0"], engine_env)
    assert code == 2 and "use 1 to 35" in err
    code, _, err = await run_cli(["usage"], engine_env | {"REDIS_URL": ""})
    assert code == 2 and "usage needs REDIS_URL" in err


# ---- what a turn costs in Redis round trips -------------------------------------------


async def trips_per_turn(engine: Engine, turns: int = 5) -> float:
    # Warm up: scripts loaded, connections open.
    await engine.answer(turn("warm", thread="warm"))
    trips = RoundTrips(engine.redis)
    for i in range(turns):
        assert await engine.claim("test", f"event-{id(engine)}-{i}")
        await engine.submit(turn(f"q{i}", thread=f"t{i}", message_id=f"m{i}"))
    return trips.count / turns


async def test_a_turn_costs_three_round_trips_four_with_limits(
    engine_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis, redis_prefix: str
) -> None:
    """claim, [begin + persona], [finish + record drop]; with limits, [limits + persona] before
    begin. Usage and in-flight records ride the upkeep's tick."""
    limits = {"USER_MESSAGES_PER_MINUTE": "100", "CHANNEL_DAILY_TOKENS": "1000000"}
    for settings, expected in (({}, 3), (limits, 4)):
        async with engine_with(engine_env, **settings) as engine:
            upkeep = Upkeep(engine.redis, engine.inflight, engine.usage, tick=3600)
            await upkeep.start()
            try:
                assert await trips_per_turn(engine) == expected
                trips = RoundTrips(engine.redis)
                await upkeep.tick()  # every answer's usage, in one pipeline
                assert trips.count == 1
            finally:
                await upkeep.stop()
    # Without an upkeep (`python -m bot chat`) usage is written per answer: one more trip.
    async with engine_with(engine_env) as engine:
        assert await trips_per_turn(engine) == 4
    channel_hash = await redis_client.hgetall(f"{redis_prefix}:usage:{today()}:channel")
    assert int(channel_hash["test:W1:C1|answers"]) == 3 * 6  # every turn counted, both ways
