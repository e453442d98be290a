"""What multi-workspace mode costs an event: intake (signed event sent → model request) in HTTP
mode with one SLACK_BOT_TOKEN, and with installations (each event authorized from its
workspace's encrypted installation in Redis: a GET, a Fernet decrypt, no auth.test once the
token was seen), over the fakes in this process with the real Redis.

    python bench/oauth_bench.py [--events 40] [--workspaces 4]

Prints a Markdown table. Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as redis

from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_oauth import Install
from tests.support.slack_fixtures import ALICE, BOT, slack_rig
from tests.support.slack_oauth_fixtures import oauth_rig

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def env(prefix: str) -> dict[str, str]:
    return {"TOGETHER_API_KEY": "bench", "REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix, "BOT_MODEL": "m"}


Send = Callable[[int], Awaitable[None]]


async def intake(llm: FakeLLM, fake: FakeSlack, send: Send, count: int) -> list[float]:
    """ms from sending each event to its model request (the time the fake model noted), one at a time."""
    times: list[float] = []
    for i in range(count):
        before = len(llm.request_times)
        started = time.monotonic()
        await send(i)
        await fake.wait_for(lambda before=before: len(llm.request_times) > before)  # type: ignore[misc]
        times.append((llm.request_times[before] - started) * 1000)
    return times


async def single(events: int) -> tuple[list[float], int]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    async with FakeLLM() as llm:
        llm.answer = Answer.of("ok")
        async with slack_rig(env(prefix), llm, mode="http") as rig:
            async def send(i: int) -> None:
                message = rig.fake.user_message(f"C{i}", ALICE.id, f"<@{BOT}> hi")
                await rig.deliver(rig.fake.event_for(message, kind="app_mention"))
            times = await intake(llm, rig.fake, send, events)
            auth = len(rig.fake.calls_to("auth.test"))
    await cleanup(prefix)
    return times, auth


async def multi(events: int, workspaces: int) -> tuple[list[float], int]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    installs = [Install(f"T{n:04d}", bot_user_id=f"U0BOT{n}", bot_id=f"B{n}") for n in range(workspaces)]
    async with FakeLLM() as llm:
        llm.answer = Answer.of("ok")
        async with oauth_rig(env(prefix), llm) as rig:
            for install in installs:
                await rig.install(install)
            before = len(rig.fake.calls_to("auth.test"))

            async def send(i: int) -> None:
                install = installs[i % workspaces]
                message = rig.fake.user_message(f"C{i}", ALICE.id, f"<@{install.bot_user_id}> hi")
                await rig.deliver(install, rig.fake.mention_event(install, message))
            times = await intake(llm, rig.fake, send, events)
            auth = len(rig.fake.calls_to("auth.test")) - before
    await cleanup(prefix)
    return times, auth


async def cleanup(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def row(name: str, times: list[float], auth: int) -> str:
    p95 = sorted(times)[int(len(times) * 0.95) - 1]
    return f"| {name} | {len(times)} | {statistics.median(times):.1f} / {p95:.1f} | {auth} |"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--workspaces", type=int, default=4)
    args = parser.parse_args()
    one = await single(args.events)
    many = await multi(args.events, args.workspaces)
    print("| mode | events | intake ms p50 / p95 | auth.test calls during the run |")
    print("| --- | --- | --- | --- |")
    print(row("one workspace (SLACK_BOT_TOKEN), HTTP", *one))
    print(row(f"{args.workspaces} installed workspaces, HTTP", *many))


if __name__ == "__main__":
    asyncio.run(main())
