"""Benchmark of the Slack bot over the fakes, with and without Tier-3-like limits.

The bot runs as in production (`python -m bot run`, Socket Mode) in a child
process, one fresh process per scenario so no rate window carries over, pointed
at the fake Slack and a fake model server that both run in this process. Times
come from CLOCK_MONOTONIC, shared by both processes; the CPU figure is the bot
process's alone.

    python bench/slack_bench.py            # the standard scenarios
    python bench/slack_bench.py --quick    # shorter answers, for a smoke run

Scenarios: one answer at 20 tokens/s × 200 tokens (post-and-update, and native
streaming); 50 simultaneous answers in 50 channels of one workspace, first without
limits, then with the fake enforcing chat.update 50 per 60 s per workspace and
chat.postMessage 1 per second per channel (429 + Retry-After past them).
Before each run the bot answers as many one-token questions at once in other
channels, like a bot that has been running a while (connection pools grown);
those are single posts, so no chat.update budget is spent before the run.
Prints a Markdown table. Not a test: nothing here is asserted.

    python bench/slack_bench.py --only "50 at once"   # a subset of the scenarios
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from common import cpu_seconds, delete_prefix, ms, start_bot, table

from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_state import Message, User

ASKER = User("U0BENCH", "bencher", display_name="Bencher")
WRITES = ("chat.postMessage", "chat.update", "chat.startStream", "chat.appendStream")
FIRST_WRITES = ("chat.postMessage", "chat.startStream")


@dataclass
class Scenario:
    name: str
    answers: int  # one per channel
    tokens: int
    rate: float
    limits: bool = False
    native: bool = False


@dataclass
class Stream:
    """One model stream's timeline, keyed by the last user message it answered."""

    arrived: float
    first_token: float | None = None
    last_token: float | None = None


class TimedLLM(FakeLLM):
    """The fake model server, also noting when each request's first and last token left."""

    def __init__(self) -> None:
        super().__init__()
        self.timelines: dict[str, Stream] = {}

    async def _stream(self, request: web.Request, body: dict[str, Any], cut: bool) -> web.StreamResponse:
        messages = body.get("messages") or [{}]
        request["bench_key"] = str(messages[-1].get("content", ""))
        self.timelines[request["bench_key"]] = Stream(arrived=time.monotonic())
        return await super()._stream(request, body, cut)

    async def _start_sse(self, request: web.Request) -> web.StreamResponse:
        response = await super()._start_sse(request)
        stream = self.timelines.get(request.get("bench_key", ""))
        if stream is None:
            return response
        write = response.write

        async def timed_write(data: bytes | bytearray | memoryview) -> None:
            raw = bytes(data)
            if b'"content": "' in raw and b'"content": ""' not in raw:
                now = time.monotonic()
                stream.first_token = stream.first_token or now
                stream.last_token = now
            await write(data)

        response.write = timed_write  # type: ignore[method-assign]
        return response


@dataclass
class Measured:
    intake: float
    first_visible: float
    final_lag: float
    writes: int
    updates_per_second: float
    exact: bool


@dataclass
class Run:
    asked_at: dict[str, float] = field(default_factory=dict)  # channel -> event pushed
    roots: dict[str, Message] = field(default_factory=dict)








def start_slack_bot(
    fake: FakeSlack, llm: FakeLLM, redis_url: str, prefix: str, native: bool
) -> subprocess.Popen[bytes]:
    return start_bot(llm.url, redis_url, prefix, {
        "SLACK_BOT_TOKEN": fake.bot_token,
        "SLACK_APP_TOKEN": fake.app_token,
        "SLACK_API_URL": fake.api_url,
        "SLACK_STREAMING": "native" if native else "update",
    })


class Bench:
    def __init__(self, fake: FakeSlack, llm: TimedLLM) -> None:
        self.fake = fake
        self.llm = llm
        fake.add_user(ASKER)

    async def ask(self, run: Run, channel: str, text: str) -> None:
        message = self.fake.user_message(channel, ASKER.id, f"<@{self.fake.bot_user_id}> {text}")
        run.roots[channel] = message
        mention, plain = self.fake.events_for(message)  # Slack sends both for a mention
        run.asked_at[channel] = time.monotonic()
        await self.fake.push_event(mention)
        await self.fake.push_event(plain)

    def writes(self, channel: str, since: int) -> list[Any]:
        return [
            c
            for c in self.fake.calls[since:]
            if c.method in WRITES and c.ok and c.params.get("channel") == channel
        ]

    def measure(self, run: Run, channel: str, expected: str, since: int) -> Measured:
        stream = self.llm.timelines[f"{ASKER.display_name}: {channel} question"]
        assert stream.first_token is not None and stream.last_token is not None
        writes = self.writes(channel, since)
        first = min(c.at for c in writes if c.method in FIRST_WRITES)
        during = [c for c in writes if c.at <= stream.last_token]
        streaming = max(stream.last_token - stream.first_token, 1e-9)
        root = run.roots[channel]
        return Measured(
            intake=stream.arrived - run.asked_at[channel],
            first_visible=first - stream.first_token,
            final_lag=max(c.at for c in writes) - stream.last_token,
            writes=len(writes),
            updates_per_second=len(during) / streaming,
            exact=self.fake.seen_text(channel, root.ts) == expected,
        )

    async def settle(self, quiet: float = 1.0) -> None:
        """Wait until the fake Slack has had no call for `quiet` seconds."""
        while True:
            count = len(self.fake.calls)
            await asyncio.sleep(quiet)
            if len(self.fake.calls) == count:
                return

    async def run(self, scenario: Scenario, bot_pid: int, label: str) -> dict[str, str]:
        answer = Answer.words(scenario.tokens, tokens_per_second=scenario.rate)
        self.llm.answer = answer
        if scenario.limits:
            self.fake.enforce_limits()
        calls_before = len(self.fake.calls)
        cpu_before = cpu_seconds(bot_pid)
        run = Run()
        channels = [f"C{label}{i:03d}" for i in range(scenario.answers)]
        for channel in channels:
            await self.ask(run, channel, f"{channel} question")

        deadline = time.monotonic() + scenario.tokens / scenario.rate + 180
        while time.monotonic() < deadline:
            if all(self.fake.seen_text(ch, run.roots[ch].ts) == answer.text for ch in channels):
                break
            await asyncio.sleep(0.05)
        await self.settle()
        cpu = cpu_seconds(bot_pid) - cpu_before
        self.fake.no_limits()

        results = [self.measure(run, ch, answer.text, calls_before) for ch in channels]
        calls = self.fake.calls[calls_before:]
        limited = [c for c in calls if c.status == 429]
        writes = [c for c in calls if c.method in WRITES]


        return {
            "scenario": scenario.name,
            "intake ms": ms([r.intake for r in results], 1),
            "first token → first text ms": ms([r.first_visible for r in results], 1),
            "last token → final text ms": ms([r.final_lag for r in results], 1),
            "Slack writes / answer": f"{statistics.mean(r.writes for r in results):.1f}",
            "updates / s": f"{statistics.mean(r.updates_per_second for r in results):.2f}",
            "429s": f"{len(limited)} ({len(limited) / max(1, len(writes)):.0%} of writes)",
            "CPU / answer ms": f"{cpu / scenario.answers * 1000:.1f}",
            "final text exact": f"{sum(r.exact for r in results)}/{len(results)}",
        }




async def run_scenario(scenario: Scenario, index: int, redis_url: str, prefix: str) -> dict[str, str]:
    llm = TimedLLM()
    async with FakeSlack() as fake, llm:
        bench = Bench(fake, llm)
        bot = start_slack_bot(fake, llm, redis_url, prefix, scenario.native)
        try:
            await fake.wait_for(lambda: fake.connected, within=30)
            # Warm up as a bot that has been running a while: as many one-token answers
            # at once as the scenario has, in other channels, so the connection pools
            # (Redis, model API, Slack) have grown. A one-token answer is a single post:
            # no chat.update budget is spent before the run.
            llm.answer = Answer(tokens=["ok"])
            warm = Run()
            warm_channels = [f"CW{index}{i:03d}" for i in range(scenario.answers)]
            for channel in warm_channels:
                await bench.ask(warm, channel, "warm up")
            await fake.wait_for(
                lambda: all(fake.seen_text(ch, warm.roots[ch].ts) == "ok" for ch in warm_channels),
                within=30,
            )
            await bench.settle(0.5)
            print(f"running: {scenario.name}…", file=sys.stderr)
            return await bench.run(scenario, bot.pid, str(index))
        finally:
            bot.terminate()
            bot.wait(30)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="REDIS_URL for the bot")
    parser.add_argument("--quick", action="store_true", help="shorter answers (smoke run)")
    parser.add_argument("--only", default="", help="run the scenarios whose name contains this")
    args = parser.parse_args()
    tokens = 40 if args.quick else 200
    scenarios = [
        Scenario("one answer, 200 tokens at 20/s", 1, tokens, 20),
        Scenario("one answer, native streaming", 1, tokens, 20, native=True),
        Scenario("50 at once in 50 channels, no limits", 50, tokens, 20),
        Scenario("50 at once in 50 channels, Tier-3-like limits", 50, tokens, 20, limits=True),
    ]
    scenarios = [s for s in scenarios if args.only in s.name]
    prefix = f"bench-slack-{uuid.uuid4().hex[:8]}"
    rows = []
    try:
        for index, scenario in enumerate(scenarios):
            rows.append(await run_scenario(scenario, index, args.redis, prefix))
    finally:
        await delete_prefix(args.redis, prefix)
    print(table(rows))
    print()
    print("intake = event pushed → model request; ms columns are p50 / p95 when several answers;")
    print("Slack writes = posts, updates and stream appends that landed; updates / s = writes")
    print("while the model streamed; CPU = the bot process only.")


if __name__ == "__main__":
    asyncio.run(main())
