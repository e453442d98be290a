"""Model breakers: shared by the replicas through Redis, per process while Redis is away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as redis

from bot.app.runtime import open_engine
from bot.config import ChainSettings, load_settings
from bot.engine import Engine
from bot.model.model_breaker import PROBE_LIMIT, ModelBreakers
from bot.ops import metrics
from bot.state.breaker import RedisState
from tests.fakes.llm import Answer, FakeLLM
from tests.support.clock import FastClock
from tests.support.core import turn
from tests.support.helpers import wait_until
from tests.support.surfaces import RecordingSurface

MODEL = "test/model"
SETTINGS = ChainSettings(breaker_failures=3, breaker_window=60.0, breaker_open=30.0)


class HandClock:
    """Wall-clock time moved by the test."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)

    def real(self, seconds: float) -> float:
        return seconds


@pytest.fixture
async def second_client(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[redis.Redis]:
    """Another replica's connection to the same Redis."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


def gauge(model: str) -> float | None:
    return metrics.current().registry.get_sample_value("chatbot_model_breaker_state", {"model": model})


async def test_failures_open_the_breaker_for_every_replica_then_one_probe(
    redis_client: redis.Redis, second_client: redis.Redis, redis_prefix: str
) -> None:
    metrics.reset()
    clock = HandClock()
    one = ModelBreakers(redis_client, redis_prefix, SETTINGS, clock)
    two = ModelBreakers(second_client, redis_prefix, SETTINGS, clock)
    await one.failed(MODEL)
    await two.failed(MODEL)
    assert await one.states([MODEL]) == {MODEL: "closed"}
    await one.failed(MODEL)  # the third failure within the window, counted across replicas
    assert await two.states([MODEL, "other"]) == {MODEL: "open", "other": "closed"}
    assert gauge(MODEL) == 1.0

    clock.t += 30
    assert await two.states([MODEL]) == {MODEL: "half_open"}
    assert await two.probe(MODEL) is True
    assert await one.probe(MODEL) is False  # one probe, whichever replica comes first
    assert await one.states([MODEL]) == {MODEL: "probing"}
    await two.failed(MODEL)  # the probe failed: open again for the whole period
    assert await one.states([MODEL]) == {MODEL: "open"}

    clock.t += 30
    assert await one.probe(MODEL) is True
    await one.succeeded(MODEL)
    assert await two.states([MODEL]) == {MODEL: "closed"}
    assert gauge(MODEL) == 0.0


async def test_failures_spread_over_more_than_the_window_do_not_open_it(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    clock = HandClock()
    breakers = ModelBreakers(redis_client, redis_prefix, SETTINGS, clock)
    for _ in range(2):
        await breakers.failed(MODEL)
    clock.t += 61
    await breakers.failed(MODEL)
    assert await breakers.states([MODEL]) == {MODEL: "closed"}


async def test_a_probe_that_never_reports_frees_the_way(redis_client: redis.Redis, redis_prefix: str) -> None:
    clock = HandClock()
    breakers = ModelBreakers(redis_client, redis_prefix, SETTINGS, clock)
    for _ in range(3):
        await breakers.failed(MODEL)
    clock.t += 30
    assert await breakers.probe(MODEL)
    clock.t += PROBE_LIMIT + 1
    assert await breakers.probe(MODEL)


async def test_without_redis_each_process_keeps_its_own_breakers() -> None:
    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    clock = HandClock()
    here = ModelBreakers(dead, "chatbot", SETTINGS, clock, state=RedisState())
    elsewhere = ModelBreakers(dead, "chatbot", SETTINGS, clock, state=RedisState())
    try:
        for _ in range(3):
            await here.failed(MODEL)
        assert await here.states([MODEL]) == {MODEL: "open"}
        assert await elsewhere.states([MODEL]) == {MODEL: "closed"}  # another process never heard
        clock.t += 30
        assert await here.probe(MODEL) and not await here.probe(MODEL)
        await here.succeeded(MODEL)
        assert await here.states([MODEL]) == {MODEL: "closed"}
    finally:
        await dead.aclose()


async def test_two_replicas_skip_a_dead_model_at_once_and_one_probe_brings_it_back(
    engine_env: dict[str, str], clock: FastClock, fake_llm: FakeLLM
) -> None:
    metrics.reset()
    env = engine_env | {
        "BOT_FALLBACK_MODELS": "spare/model", "MODEL_BREAKER_FAILURES": "2",
        "MODEL_BREAKER_OPEN_SECONDS": "2",
    }
    fake_llm.script = lambda asked: Answer.of(f"answer to {asked[-2:]}")
    settings = load_settings(env, dotenv=False)
    async with open_engine(settings, clock) as one, open_engine(settings, clock) as two:
        fake_llm.fail_model(MODEL, "503")
        for n in range(2):
            outcome = await one.answer(turn(f"q{n}", thread=f"t{n}"))
            assert outcome.model == "spare/model"
        assert fake_llm.asked(MODEL) == 4  # two turns, each a try and a retry

        surface = RecordingSurface()
        outcome = await two.answer(turn("q2", thread="t2", surface=surface))
        assert outcome.model == "spare/model" and "Answered by `spare/model`" in surface.text
        assert fake_llm.asked(MODEL) == 4  # the other replica did not ask the dead model
        skipped = {"from": MODEL, "to": "spare/model", "reason": "breaker_open"}
        assert metrics.current().registry.get_sample_value("chatbot_model_fallbacks_total", skipped) == 1

        fake_llm.heal(MODEL)
        await wait_until(in_state(two, "half_open"), timeout=5)  # 2 s of the test clock
        probed = await two.answer(turn("q3", thread="t3"))
        assert probed.model == MODEL and fake_llm.asked(MODEL) == 5
        assert await one.breakers.states([MODEL]) == {MODEL: "closed"}


def in_state(engine: Engine, state: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await engine.breakers.states([MODEL]))[MODEL] == state

    return check
