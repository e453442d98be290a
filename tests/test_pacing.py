"""Shared write budgets: progress never starves finals, finals go first, 429s slow everyone."""

from __future__ import annotations

import asyncio
import time

from bot.pacing import FINAL, POST, RateWindow, WindowRegistry, try_take_progress


def test_window_counts_writes_in_the_last_period() -> None:
    window = RateWindow(limit=2, per=10)
    now = time.monotonic()
    window.record(now - 11)  # expired
    window.record(now - 1)
    assert window.free_slots(now) == 1


def test_progress_leaves_room_for_every_live_answers_final() -> None:
    window = RateWindow(limit=5, per=60)
    window.reserved = 3
    taken = sum(try_take_progress([window]) for _ in range(10))
    assert taken == 2  # 5 slots − 3 reserved for finals
    assert window.free_slots() == 3


def test_progress_takes_all_windows_or_none() -> None:
    roomy, full = RateWindow(10, 60), RateWindow(1, 60)
    full.record(time.monotonic())
    assert not try_take_progress([roomy, full])
    assert roomy.free_slots() == 10


async def test_finals_go_before_posts() -> None:
    window = RateWindow(limit=1, per=0.2)
    window.record(time.monotonic())
    order: list[str] = []

    async def write(name: str, priority: int) -> None:
        await window.acquire(priority)
        order.append(name)

    post = asyncio.create_task(write("post", POST))
    await asyncio.sleep(0)  # the post is queued first…
    final = asyncio.create_task(write("final", FINAL))
    await asyncio.wait_for(asyncio.gather(post, final), 2)
    assert order == ["final", "post"]  # …but the final text goes first


async def test_back_off_blocks_until_retry_after() -> None:
    window = RateWindow(limit=10, per=1)
    window.back_off(0.2)
    assert window.free_slots() == 0
    started = time.monotonic()
    await asyncio.wait_for(window.acquire(), 2)
    assert time.monotonic() - started >= 0.15


async def test_cancelled_waiter_leaves_the_queue() -> None:
    window = RateWindow(limit=1, per=5)
    window.record(time.monotonic())
    waiter = asyncio.create_task(window.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert window.has_spare(time.monotonic() + 6)


def test_registry_shares_one_window_per_key() -> None:
    registry = WindowRegistry()
    assert registry.get("slack:T1", 50, 60) is registry.get("slack:T1", 50, 60)
    assert registry.get("slack:T1", 50, 60) is not registry.get("slack:T2", 50, 60)


def test_short_windows_hold_back_at_most_half_for_finals() -> None:
    per_second = RateWindow(limit=50, per=1.1)
    per_second.reserved = 50  # fifty live answers
    assert per_second.held_back == 25
    assert try_take_progress([per_second])  # progress still shows
    per_minute = RateWindow(limit=50, per=60)
    per_minute.reserved = 50
    assert not try_take_progress([per_minute])  # a missed final would wait a minute
