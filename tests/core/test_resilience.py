"""The pieces that let the bot answer without Redis: breaker, local dedup, persona cache."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
import redis.asyncio as redis

from bot.contract import ChannelScope, ConversationKey, HistoryEntry
from bot.state.breaker import RedisState
from bot.state.resilience import LocalSeen, PersonaCache, Unsaved

DOWN = redis.ConnectionError("refused")


def test_the_breaker_lets_one_probe_through_while_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    state = RedisState(retry_after=0.0)
    assert state.worth_trying and state.worth_trying  # healthy: always
    state.failed("claim", DOWN)
    state.failed("history", DOWN)
    assert state.degraded
    assert state.worth_trying  # the probe
    assert not state.worth_trying  # everyone else answers without Redis meanwhile
    state.failed("claim", DOWN)
    assert state.worth_trying  # the next probe
    state.succeeded()
    assert not state.degraded and state.worth_trying and state.worth_trying
    said = [r.getMessage() for r in caplog.records if r.name == "bot.state.breaker"]
    assert len(said) == 2 and "unreachable" in said[0] and "again" in said[1]  # once each way


def test_the_breaker_waits_before_probing() -> None:
    state = RedisState(retry_after=60.0)
    state.failed("claim", DOWN)
    assert not state.worth_trying


def test_local_dedup_remembers_a_bounded_number_of_events() -> None:
    seen = LocalSeen(ttl=60, limit=3)
    assert seen.claim("a") and not seen.claim("a")
    for key in "bcd":
        assert seen.claim(key)
    assert seen.claim("a")  # the oldest made room
    expired = LocalSeen(ttl=-1)
    assert expired.claim("x") and expired.claim("x")


def test_the_persona_cache_falls_back_to_the_default_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    cache = PersonaCache(max_age=60)
    scope, other = ChannelScope("slack", "T", "C1"), ChannelScope("slack", "T", "C2")
    cache.remember(scope, {"system_prompt": "pirate"})
    assert cache.recall(scope) == {"system_prompt": "pirate"}
    assert cache.recall(other) == {} and cache.recall(other) == {}
    assert len([r for r in caplog.records if "C2" in r.getMessage()]) == 1
    stale = PersonaCache(max_age=-1)
    stale.remember(scope, {"system_prompt": "pirate"})
    assert stale.recall(scope) == {}


def test_unsaved_turns_come_back_in_order_once() -> None:
    unsaved = Unsaved(limit=1)
    key, other = ConversationKey("t", "W", "C", "1"), ConversationKey("t", "W", "C", "2")
    first, second = HistoryEntry("user", "q"), HistoryEntry("assistant", "a")
    unsaved.keep(key, [first])
    unsaved.keep(key, [second])
    assert unsaved.take(key) == ([first, second], [])
    assert unsaved.take(key) == ([], [])
    unsaved.keep(key, [first])
    unsaved.keep(other, [second])  # over the limit: the oldest conversation goes
    assert unsaved.entries(key) == [] and unsaved.entries(other) == [second]


async def test_a_cancelled_probe_frees_the_way_for_the_next_caller() -> None:
    """A call cut short (a write the stream no longer waits for, a Stop) learnt nothing about
    Redis: it must not hold the probe, or Redis is skipped for PROBE_LIMIT seconds."""
    state = RedisState(retry_after=0)
    state.failed("test", redis.ConnectionError("down"))
    started = asyncio.Event()

    async def hangs() -> int:
        started.set()
        await asyncio.sleep(60)
        return 1

    probe = asyncio.ensure_future(state.call("probe", hangs, otherwise=0))
    await started.wait()
    probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probe

    async def answers() -> int:
        return 2

    assert await state.call("next", answers, otherwise=0) == 2
    assert not state.degraded
