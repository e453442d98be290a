"""Benchmark of the Slack bot over the fakes: what people see under load, per issue 8's targets.

The bot runs as in production (`python -m bot run`) in child processes, fresh
ones per scenario so no rate window carries over, pointed at the fake Slack and
a fake model server that both run in this process: one bot in Socket Mode, or
several in HTTP mode on one Redis prefix with the events spread over them (the
shipped Kubernetes layout). Times come from CLOCK_MONOTONIC, shared by all the
processes; the CPU figure is the bot processes' alone.

    python bench/slack_bench.py            # the standard scenarios
    python bench/slack_bench.py --quick    # shorter answers and waits, for a smoke run
    python bench/slack_bench.py --only "× 2"   # the scenarios whose name contains this
    python bench/slack_bench.py --only progress   # issue 26's progress table alone

Scenarios: one answer of 200 tokens at 20 tokens/s (post-and-update, and native
streaming); 50 simultaneous answers in 50 channels of one workspace, without and
with Slack's limits (the fake enforcing chat.update 50 per 60 s per workspace and
chat.postMessage 1 per s per channel, 429 + Retry-After past them); conversations
of two turns, the follow-up sent 1 s after the answer's last token: 20 without
limits, 50 with them, and 30 over 3 HTTP-mode replicas with them. The "progress" table
(issue 26): 1, 5, 10, 20 and 30 conversations of two turns at once under Slack's limits
(native streaming: chat.startStream and chat.stopStream 20 a minute, chat.appendStream
100), post-and-update and native, and 20 × 2 with `SLACK_PROGRESS=single`.
Before each run the bot answers as many one-token questions at once in other
channels, like a bot that has been running a while (connection pools grown);
those are single posts, so no chat.update budget is spent before the run.
Prints a Markdown table (see `tests/support/measure.py` for what each column measures).
Not a test: nothing here is asserted; the last column names the targets a run missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from itertools import count
from typing import Any

from common import (
    cpu_seconds,
    delete_prefix,
    free_port,
    print_progress,
    start_bot,
    stop_all,
    table,
    until_ready,
)

from tests.fakes.llm import FakeLLM
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_events import SignedSender
from tests.fakes.slack_state import User
from tests.support.load import Deliver, SlackLoad, tagged_answers
from tests.support.measure import fmt_s

ASKER = User("U0BENCH", "bencher", display_name="Bencher")
SECRET = "bench-signing-secret"


@dataclass
class Scenario:
    name: str
    conversations: int  # one channel each
    turns: int
    tokens: int
    rate: float
    limits: bool = False
    native: bool = False
    replicas: int = 0  # 0: one bot in Socket Mode; N: N bots in HTTP mode
    progress: bool = False  # a line of the "progress" table (issue 26), not issue 8's
    env: tuple[tuple[str, str], ...] = ()  # more settings for the bot


@dataclass
class Bots:
    """The bot processes of one scenario and how events reach them."""

    processes: list[subprocess.Popen[bytes]]
    deliver: Deliver

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.processes)


@contextlib.asynccontextmanager
async def running_bots(
    scenario: Scenario, fake: FakeSlack, llm: FakeLLM, redis_url: str, prefix: str
) -> AsyncIterator[Bots]:
    common = {
        "SLACK_BOT_TOKEN": fake.bot_token,
        "SLACK_API_URL": fake.api_url,
        "SLACK_STREAMING": "native" if scenario.native else "update",
        **dict(scenario.env),
        # Measured before the stop: answers still waiting then need no long drain.
        "SHUTDOWN_GRACE_SECONDS": "2",
    }
    processes: list[subprocess.Popen[bytes]] = []
    senders: list[SignedSender] = []
    try:
        if not scenario.replicas:
            socket = {"SLACK_APP_TOKEN": fake.app_token, "SLACK_MODE": "socket"}
            processes.append(start_bot(llm.url, redis_url, prefix, common | socket))
            await fake.wait_for(lambda: fake.connected, within=30)

            async def push(event: dict[str, Any]) -> None:
                await fake.push_event(event)

            yield Bots(processes, push)
            return
        ports = [free_port() for _ in range(scenario.replicas)]
        for port in ports:
            http = {"SLACK_SIGNING_SECRET": SECRET, "SLACK_MODE": "http", "SLACK_PORT": str(port)}
            processes.append(start_bot(llm.url, redis_url, prefix, common | http))
        for port in ports:
            await until_ready(f"http://127.0.0.1:{port}/readyz")
            senders.append(SignedSender(f"http://127.0.0.1:{port}/slack/events", SECRET))
        turn = count()

        async def spread(event: dict[str, Any]) -> None:
            # Round robin, as a load balancer would: the two events of one mention may
            # reach different replicas.
            await senders[next(turn) % len(senders)].send_event(fake.callback(event))

        yield Bots(processes, spread)
    finally:
        for sender in senders:
            await sender.close()
        stop_all(processes)


async def quiet(fake: FakeSlack, seconds: float = 1.0) -> None:
    """Wait until the fake Slack has had no call for `seconds` (stray writes counted)."""
    while True:
        calls = len(fake.calls)
        await asyncio.sleep(seconds)
        if len(fake.calls) == calls:
            return


async def run_scenario(
    scenario: Scenario, redis_url: str, prefix: str, grace: float
) -> dict[str, str]:
    async with FakeSlack() as fake, FakeLLM() as llm:
        fake.add_user(ASKER)
        async with running_bots(scenario, fake, llm, redis_url, prefix) as bots:
            # Warm up as a bot that has been running a while: as many one-token answers
            # at once as the scenario has conversations, in other channels, so the
            # connection pools (Redis, model API, Slack) have grown. A one-token answer
            # is a single post: no chat.update budget is spent before the run.
            llm.script = tagged_answers(1, 0.0)
            warm = SlackLoad(
                fake=fake, llm=llm, deliver=bots.deliver, live_answers=lambda: 0, grace=30,
                user=ASKER.id, label="w",
            )
            await warm.run(scenario.conversations, 1, channel=lambda n: f"CW{n:03d}")
            await quiet(fake, 0.5)

            print(f"running: {scenario.name}…", file=sys.stderr)
            llm.script = tagged_answers(scenario.tokens, scenario.rate)
            if scenario.limits:
                fake.enforce_limits()
                if scenario.native:  # Tier 2 and Tier 4, as Slack documents them
                    fake.limit("chat.startStream", 20, 60.0)
                    fake.limit("chat.stopStream", 20, 60.0)
                    fake.limit("chat.appendStream", 100, 60.0)
            cpu_before = bots.cpu()
            load = SlackLoad(
                fake=fake, llm=llm, deliver=bots.deliver, live_answers=lambda: 0, grace=grace,
                user=ASKER.id, label="r",
            )
            await load.run(scenario.conversations, scenario.turns)
            await quiet(fake)
            summary = load.summary()  # after the quiet: a stray late write still counts
            summary.cpu = bots.cpu() - cpu_before
            fake.no_limits()
            if scenario.progress:
                return summary.progress_row(scenario.name, summary.progress_late() + summary.problems())
            return summary.row(scenario.name, summary.problems())


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="REDIS_URL for the bot")
    parser.add_argument("--quick", action="store_true", help="shorter answers and waits (smoke run)")
    parser.add_argument("--only", default="", help="run the scenarios whose name contains this")
    parser.add_argument(
        "--grace", type=float, default=None,
        help="s to wait for finals after the last stream ended (default 75, --quick 20); "
        "a final later than that shows as 'never'",
    )
    args = parser.parse_args()
    tokens, rate = (40, 20.0) if args.quick else (200, 20.0)
    grace = args.grace if args.grace is not None else (20.0 if args.quick else 75.0)
    scenarios = [
        Scenario(f"one answer, {tokens} tokens at 20/s", 1, 1, tokens, rate),
        Scenario("one answer, native streaming", 1, 1, tokens, rate, native=True),
        Scenario("50 at once in 50 channels, no limits", 50, 1, tokens, rate),
        Scenario("50 at once in 50 channels, Slack limits", 50, 1, tokens, rate, limits=True),
        Scenario("20 × 2 turns, no limits", 20, 2, tokens, rate),
        Scenario("50 × 2 turns, Slack limits", 50, 2, tokens, rate, limits=True),
        Scenario("30 × 2 turns, 3 HTTP replicas, Slack limits", 30, 2, tokens, rate, True, replicas=3),
    ]
    # Issue 26: N conversations at once in one workspace, each with a follow-up, under the limits.
    scenarios += [
        Scenario(
            f"progress: {n} × 2, {mode}" + (", single" if progress == "single" else ""),
            n, 2, tokens, rate, limits=True, native=mode == "native", progress=True,
            env=(("SLACK_PROGRESS", progress),),
        )
        for mode in ("update", "native")
        for progress in ("parts", "single")
        for n in ((1, 5, 10, 20, 30) if progress == "parts" else (20,))
    ]
    scenarios = [s for s in scenarios if args.only in s.name]
    prefix = f"bench-slack-{uuid.uuid4().hex[:8]}"
    rows: list[dict[str, str]] = []
    progress_rows: list[dict[str, str]] = []
    try:
        for scenario in scenarios:
            row = await run_scenario(scenario, args.redis, prefix, grace)
            (progress_rows if scenario.progress else rows).append(row)
            await delete_prefix(args.redis, prefix)  # no conversation carries over
    finally:
        await delete_prefix(args.redis, prefix)
    print_progress(progress_rows)
    if not rows:
        return
    print(table(rows))
    print()
    print(f"answers of {tokens} tokens at {rate:.0f} tokens/s; follow-ups sent 1 s after the answer's last")
    print("token. exact = the final text shown for good, no stream left open; last token → final = until")
    print(f"it showed ('never': not within {fmt_s(grace)}); partial after end = how long a half-written text")
    print("stayed up after its stream ended; 429s / writes = Slack's refusals / posts, updates, deletes and")
    print("stream calls; CPU = the bot processes only. Targets (issue 8): all exact, p90 ≤ 1 s, max ≤ 3 s,")
    print("follow-up intake ≤ 0.5 s, partial ≤ 3 s, 429s ≤ 1%.")


if __name__ == "__main__":
    asyncio.run(main())
