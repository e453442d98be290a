"""The pacing rules (bot.delivery.pacing), one test each, on the real Redis and an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bot.contract import SurfaceLimits
from bot.contract.budgets import FINAL, POST, Window
from bot.delivery.pacing import HOLD_LEASE, Pacer
from bot.delivery.reply import ReplyStream
from bot.ops import metrics
from tests.support.helpers import RoundTrips, wait_until
from tests.support.surfaces import RecordingSurface

MINUTE = Window("slack:T1:chat.update", limit=10, per=60)
SECOND = Window("discord:bot:edit:1", limit=2, per=1)


class ManualClock:
    """Virtual time: `sleep` moves it forward at once."""

    def __init__(self) -> None:
        self.t = 1_000_000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)

    def real(self, seconds: float) -> float:
        return 0.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def pacer(redis_client: redis.Redis, redis_prefix: str, clock: ManualClock) -> AsyncIterator[Pacer]:
    yield Pacer(redis_client, redis_prefix, clock)


async def fill(pacer: Pacer, window: Window, count: int) -> None:
    for _ in range(count):
        assert await pacer.use((window,))


async def test_a_window_counts_the_writes_of_the_last_period(pacer: Pacer, clock: ManualClock) -> None:
    await fill(pacer, SECOND, 2)
    assert not (await pacer.progress((SECOND,), "a")).ok
    clock.t += 1.01
    assert (await pacer.progress((SECOND,), "a")).ok


async def test_a_long_window_reserves_a_final_per_message_until_it_is_full(pacer: Pacer) -> None:
    granted = [(await pacer.reserve((MINUTE,), f"answer{i}")).ok for i in range(12)]
    assert granted == [True] * 10 + [False] * 2
    # A reserved final is never refused, however full the window.
    assert await pacer.use((MINUTE,), "answer3")
    # Spent, it still counts as a write in the window: no room for an eleventh answer.
    assert not (await pacer.reserve((MINUTE,), "late")).ok


async def test_progress_leaves_every_reserved_final_and_headroom_free(pacer: Pacer) -> None:
    for name in ("a", "b"):
        assert (await pacer.reserve((MINUTE,), name)).ok
    taken = [(await pacer.progress((MINUTE,), "a")).ok for _ in range(10)]
    # 10 slots − 2 reserved finals − 2 kept for answers about to start = 6 progress edits.
    assert taken.count(True) == 6
    assert await pacer.use((MINUTE,), "a") and await pacer.use((MINUTE,), "b")


async def test_a_final_without_reservation_never_waits_on_a_long_window(
    pacer: Pacer, clock: ManualClock
) -> None:
    await fill(pacer, MINUTE, 10)
    before = clock.t
    assert not await pacer.use((MINUTE,), "nobody", wait=False)  # refused at once: posted anew
    assert clock.t == before


async def test_in_a_short_window_a_final_waits_at_most_the_window(pacer: Pacer, clock: ManualClock) -> None:
    await fill(pacer, SECOND, 2)
    before = clock.t
    assert await pacer.use((SECOND,), "a", wait=False)
    assert 0 < clock.t - before <= SECOND.per


async def test_a_post_with_no_other_way_waits_even_on_a_long_window(
    pacer: Pacer, clock: ManualClock
) -> None:
    await fill(pacer, MINUTE, 10)
    before = clock.t
    assert await pacer.use((MINUTE,), "whole text", POST)
    assert 0 < clock.t - before <= MINUTE.per


async def test_short_windows_keep_at_most_half_for_live_answers(pacer: Pacer) -> None:
    window = Window("discord:bot:requests", limit=10, per=1)
    for i in range(10):
        assert (await pacer.reserve((window,), f"answer{i}")).ok  # short: always, it only counts them
    taken = [(await pacer.progress((window,), "answer0")).ok for _ in range(10)]
    assert taken.count(True) == 5  # half kept for finals, half still shows progress


async def test_an_answers_first_words_may_use_what_a_short_window_keeps_for_finals(
    pacer: Pacer, clock: ManualClock
) -> None:
    for i in range(2):
        assert (await pacer.reserve((SECOND,), f"live{i}")).ok  # two live answers: one slot kept
    assert await pacer.use((SECOND,), priority=POST)
    before = clock.t
    assert await pacer.use((SECOND,), "live0", priority=POST, first=True)
    assert clock.t == before  # first words: at once, in the slot kept for finals
    assert await pacer.use((SECOND,), priority=POST)
    assert clock.t > before  # any other post waits for the window


async def test_the_spare_slot_of_a_window_is_for_finals_only(pacer: Pacer) -> None:
    channel = Window("discord:bot:create:7", limit=5, per=5.1, spare=1)
    reserved = [(await pacer.reserve((channel,), f"early{i}")).ok for i in range(5)]
    assert reserved == [True] * 4 + [False]  # no early post may empty the bucket
    assert not (await pacer.progress((channel,), "early0")).ok
    assert await pacer.use((channel,), "whole text", FINAL, wait=False)  # a final may


async def test_finals_go_before_posts(pacer: Pacer, clock: ManualClock) -> None:
    await fill(pacer, SECOND, 2)
    order: list[str] = []

    async def write(name: str, priority: int) -> None:
        assert await pacer.use((SECOND,), name, priority)
        order.append(name)

    post = asyncio.create_task(write("post", POST))
    await asyncio.sleep(0)  # the post queues first…
    final = asyncio.create_task(write("final", FINAL))
    await asyncio.wait_for(asyncio.gather(post, final), 5)
    assert order == ["final", "post"]  # …but the final goes first


async def test_a_429_blocks_the_scope_for_retry_after_and_narrows_it(
    pacer: Pacer, clock: ManualClock
) -> None:
    assert (await pacer.reserve((MINUTE,), "held")).ok
    await pacer.throttle((MINUTE,), 30)
    assert not (await pacer.reserve((MINUTE,), "new")).ok
    assert not (await pacer.progress((MINUTE,), "held")).ok
    assert not await pacer.use((MINUTE,), "held", wait=False)  # blocked beyond what a final may wait
    clock.t += 31  # the block is over; the narrowed limit holds for the rest of the period
    granted = [(await pacer.reserve((MINUTE,), f"after{i}")).ok for i in range(10)]
    assert granted.count(True) == 7 - 1  # narrowed to 7, one still held
    clock.t += 30  # a whole period without 429: it grows back towards the documented 10
    assert (await pacer.reserve((MINUTE,), "recovered")).ok


async def test_a_window_that_may_grow_widens_while_the_platform_accepts(
    pacer: Pacer, clock: ManualClock
) -> None:
    learning = Window("slack:T1:chat.update", limit=4, per=60, most=8)
    # A new window is watched for a whole period before it may grow.
    assert [(await pacer.reserve((learning,), f"a{i}")).ok for i in range(5)] == [True] * 4 + [False]
    clock.t += 61  # nothing refused for a period (the reservations' leases still hold)
    assert (await pacer.reserve((learning,), "a period on")).ok
    assert not (await pacer.reserve((learning,), "too soon")).ok  # one step per quarter period
    clock.t += 16
    assert (await pacer.reserve((learning,), "later")).ok
    await pacer.throttle((learning,), 1)  # the platform said no: stop growing for a period
    clock.t += 16
    assert not (await pacer.reserve((learning,), "after 429")).ok


async def test_replicas_share_one_budget(
    redis_client: redis.Redis, redis_prefix: str, clock: ManualClock
) -> None:
    one, two = Pacer(redis_client, redis_prefix, clock), Pacer(redis_client, redis_prefix, clock)
    grants = [(await (one if i % 2 else two).reserve((MINUTE,), f"r{i}")).ok for i in range(12)]
    assert grants.count(True) == 10


async def test_spacing_grows_with_the_answers_live(pacer: Pacer) -> None:
    # The writes left to progress (the limit less the finals kept) shared by the live answers.
    alone = await pacer.reserve((MINUTE,), "first")
    assert alone.spacing == pytest.approx(60 / 9)  # 60 s / (10 writes - 1 final kept)
    for i in range(4):
        await pacer.reserve((MINUTE,), f"more{i}")
    crowded = await pacer.progress((MINUTE,), "first")
    assert crowded.spacing == pytest.approx(60.0)  # five live answers share 5 writes a minute


async def test_a_small_channel_window_spaces_progress_evenly_and_says_when_it_has_room(
    pacer: Pacer, clock: ManualClock
) -> None:
    # Discord: 5 edits per 5 s per channel, the last for finals only.
    channel = Window("discord:bot:edit:7", limit=5, per=5, spare=1)
    grant = await pacer.reserve((channel,), "answer")
    assert grant.spacing == pytest.approx(5 / 3)  # 5 s × 1 / (5 - 1 spare - 1 final kept)
    for _ in range(3):
        assert (await pacer.progress((channel,), "answer")).ok
    clock.t += 1.0
    refused = await pacer.progress((channel,), "answer")
    assert not refused.ok  # three a window…
    assert refused.wait == pytest.approx(4.0)  # …and it says when the first of them leaves it
    waiting = await pacer.reserve((channel,), "next")
    assert not waiting.ok and waiting.wait == pytest.approx(4.0)  # a new answer is told the same


async def test_a_reservation_counts_writes_leaving_within_a_final_wait_as_gone(
    pacer: Pacer, clock: ManualClock
) -> None:
    channel = Window("discord:bot:edit:8", limit=5, per=5, spare=1)
    await fill(pacer, channel, 1)  # the last answer's edits: the channel's window is full
    clock.t += 2.0
    await fill(pacer, channel, 3)
    clock.t += 1.9
    assert not (await pacer.reserve((channel,), "early")).ok  # the oldest leaves in 1.1 s
    clock.t += 0.2
    assert (await pacer.reserve((channel,), "next")).ok  # …in 0.9 s: the answer shows now
    assert not (await pacer.reserve((channel,), "another")).ok  # one such slot, not two
    before = clock.t
    assert await pacer.use((channel,), "next", wait=False)  # its final: the spare slot, at once
    assert clock.t == before
    assert await pacer.use((channel,), wait=False)  # the window is at its limit: the next
    assert clock.t - before == pytest.approx(0.9)  # final waits for the oldest write to leave


async def test_a_reservation_left_by_a_dead_process_expires(pacer: Pacer, clock: ManualClock) -> None:
    for i in range(10):
        await pacer.reserve((MINUTE,), f"dead{i}")
    assert not (await pacer.reserve((MINUTE,), "alive")).ok
    clock.t += HOLD_LEASE + 1
    assert (await pacer.reserve((MINUTE,), "alive")).ok


async def test_pacing_goes_on_per_process_while_redis_is_away(clock: ManualClock) -> None:
    # Nothing listens on port 1; no retries with back-off (redis-py's default), one refusal is enough.
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    pacer = Pacer(unreachable, "away", clock)
    try:
        assert [(await pacer.reserve((MINUTE,), f"a{i}")).ok for i in range(11)] == [True] * 10 + [False]
    finally:
        await unreachable.aclose()


# ---- the reply stream on top of the rules ------------------------------------------------


def paced_surface(window: Window) -> RecordingSurface:
    post = Window("slack:T1:chat.postMessage:C1", limit=100, per=1)
    return RecordingSurface(
        limits=SurfaceLimits(
            max_chars=4000, min_edit_interval=0.01, post_windows=(post,), edit_windows=(window,)
        )
    )


async def test_no_reservation_means_status_then_the_whole_text_once(pacer: Pacer) -> None:
    seen = metrics.reset().registry.get_sample_value
    await fill(pacer, MINUTE, 10)  # the update budget is spent
    surface = paced_surface(MINUTE)
    async with ReplyStream(surface, pacer) as reply:
        reply.add("Hello")
        await wait_until(lambda: any(w.kind == "status" for w in surface.writes), 2)
        reply.add(", world")
        await reply.finish()
    kinds = [w.kind for w in surface.writes]
    assert kinds.count("post") == 1 and "edit" not in kinds  # nothing half-written, ever
    assert surface.text == "Hello, world"
    assert kinds.index("status") < kinds.index("post")
    assert reply.fallback == "whole_text"
    # What an operator sees on /metrics: the saturated budget and the fallback taken.
    assert seen("chatbot_pacing_fallbacks_total", {"platform": "slack", "kind": "whole_text"}) == 1
    refused = {"platform": "slack", "window": "chat.update", "kind": "not_reserved"}
    assert seen("chatbot_pacing_total", refused) == 1
    assert seen("chatbot_pacing_budget_used_ratio", {"platform": "slack", "window": "chat.update"}) == 1


async def test_a_refused_final_edit_is_posted_anew_and_the_partial_deleted(pacer: Pacer) -> None:
    surface = paced_surface(MINUTE)
    async with ReplyStream(surface, pacer) as reply:
        reply.add("partial")
        await wait_until(lambda: reply.message_ids, 2)
        surface.fail_edits, surface.retry_after = 1, 30  # the final edit meets a long 429
        reply.add(" and the rest")
        await reply.finish()
    assert surface.text == "partial and the rest"
    assert [w.kind for w in surface.platform_writes] == ["post", "post", "delete"]
    assert reply.fallback == "repost"


async def test_every_message_of_a_long_answer_reserves_its_own_final(pacer: Pacer) -> None:
    surface = paced_surface(MINUTE)
    surface.limits = SurfaceLimits(
        max_chars=50, min_edit_interval=0.01,
        post_windows=surface.limits.post_windows, edit_windows=(MINUTE,),
    )
    words = " ".join(f"word{i}" for i in range(40))
    async with ReplyStream(surface, pacer) as reply:
        for word in words.split(" "):
            reply.add(word + " ")
            await asyncio.sleep(0)
        await reply.finish()
    assert " ".join(surface.messages.values()).split() == words.split()
    assert len(surface.messages) >= 5
    assert reply.fallback == ""  # each message was shown early and sealed with its own final


async def test_an_answer_costs_one_redis_trip_per_platform_write_and_one_reservation(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    pacer = Pacer(redis_client, redis_prefix)
    surface = paced_surface(MINUTE)
    trips = RoundTrips(redis_client)
    async with ReplyStream(surface, pacer) as reply:
        for word in ("one ", "two ", "three"):
            reply.add(word)
            await wait_until(lambda: reply.message_ids, 2)
        await reply.finish()
    assert trips.count == len(surface.platform_writes) + 1  # nothing left to release afterwards
