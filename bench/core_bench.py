"""Benchmark of the core: N conversations at once against the fake model server.

The fake model server runs in its own process, so the CPU and memory figures
are the bot's alone. Times come from CLOCK_MONOTONIC in both processes.

    python bench/core_bench.py                 # the standard scenarios
    python bench/core_bench.py --redis ''      # on the embedded store instead of Redis
    python bench/core_bench.py --tracing       # CPU per answer: traces exported to a local
                                               # OTLP/HTTP receiver vs tracing off

Prints a Markdown table. Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field

from common import ROOT, free_port, pct, table

from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.contract import Author, Controls, ConversationKey, SurfaceLimits, Turn
from bot.ops.upkeep import Upkeep
from bot.state import store
from tests.support.helpers import RoundTrips


@dataclass
class BenchSurface:
    """Records when text became visible; writes cost nothing (no platform in the way)."""

    limits: SurfaceLimits = field(
        default_factory=lambda: SurfaceLimits(max_chars=4000, min_edit_interval=1.0)
    )
    messages: dict[str, str] = field(default_factory=dict)
    writes: int = 0
    first_visible: float | None = None
    last_write: float = 0.0

    async def post(self, text: str, *, complete: bool = False, controls: Controls | None = None) -> str:
        message_id = str(len(self.messages))
        self.messages[message_id] = text
        self._wrote()
        return message_id

    async def edit(self, message_id: str, text: str, *, controls: Controls | None = None) -> None:
        self.messages[message_id] = text
        self._wrote()

    async def delete(self, message_id: str) -> None:
        self.messages.pop(message_id, None)

    async def set_status(self, status: str | None) -> None:
        return None

    def _wrote(self) -> None:
        now = time.monotonic()
        self.writes += 1
        self.last_write = now
        if self.first_visible is None:
            self.first_visible = now




def start_fake(words: int, rate: float | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.llm", "--port", str(port), "--words", str(words),
         "--rate", str(rate or 0)],
        cwd=ROOT, stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.readline()  # "fake model API on …" once it listens
    return process, f"http://127.0.0.1:{port}/v1"


def stream_logs(base_url: str) -> dict[str, dict[str, float]]:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/_streams") as response:
        return {log["last_user_message"]: log for log in json.load(response)}




async def scenario(
    name: str, conversations: int, words: int, rate: float | None, redis_url: str,
    extra_env: dict[str, str] | None = None,
) -> dict[str, str]:
    fake, url = start_fake(words, rate)
    env = {"TOGETHER_API_KEY": "bench", "TOGETHER_BASE_URL": url, "REDIS_URL": redis_url,
           "REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}", "BOT_MODEL": "bench/model",
           "MAX_CONCURRENT_REPLIES": "200"} | (extra_env or {})
    try:
        async with open_engine(load_settings(env, dotenv=False)) as engine:
            # Warm up as in steady state: connection pools at size, scripts loaded, imports done.
            await asyncio.gather(*[
                engine.answer(Turn(ConversationKey("bench", "W", "warm", f"up{i}"), Author("U", "u"),
                                   "warm", "warm", BenchSurface()))
                for i in range(conversations)
            ])
            # The background upkeep of `python -m bot run` (usage, in-flight records), on a
            # client of its own so its trips are counted apart from the turns'.
            upkeep_client = await store.connect(engine.settings)
            upkeep = Upkeep(upkeep_client, engine.inflight, engine.usage, sweep_every=3600)
            await upkeep.start()
            await upkeep.sweep()  # the start-up sweep (its next is an hour away)
            trips, upkeep_trips = RoundTrips(engine.redis), RoundTrips(upkeep_client)
            started = time.monotonic()
            surfaces = [BenchSurface() for _ in range(conversations)]
            turns = [
                Turn(ConversationKey("bench", "W", f"C{i}", f"T{i}"), Author(f"U{i}", f"user{i}"),
                     f"question {i}", f"m{i}", surfaces[i])
                for i in range(conversations)
            ]
            cpu_before = time.process_time()
            tasks = []
            for turn in turns:
                if not await engine.claim("bench", f"{turn.conversation}:{turn.message_id}"):
                    raise RuntimeError("dedup refused a new message")
                turn.received_at = time.monotonic()
                tasks.append(engine.submit(turn))
            outcomes = await asyncio.gather(*tasks)
            cpu = time.process_time() - cpu_before
            upkeep_rate = upkeep_trips.count / (time.monotonic() - started)
            turn_trips = trips.count
            await upkeep.stop()
            await upkeep_client.aclose()
        logs = stream_logs(url)
    finally:
        fake.terminate()
        fake.wait()

    intake, arrival, first, final = [], [], [], []
    for turn, surface, outcome in zip(turns, surfaces, outcomes, strict=True):
        log = logs[f"{turn.author.name}: {turn.text}"]
        assert outcome.intake_s is not None
        intake.append(outcome.intake_s)
        arrival.append(log["arrived"] - turn.received_at)
        assert surface.first_visible is not None
        first.append(surface.first_visible - log["first_token"])
        final.append(surface.last_write - log["last_token"])
    expected = " ".join(f"w{i + 1}" for i in range(words))
    exact = sum("\n".join(s.messages.values()) == expected for s in surfaces)
    ok = sum(o.outcome == "ok" for o in outcomes)
    ms = lambda xs: f"{pct(xs, 0.5) * 1000:.1f} / {pct(xs, 0.95) * 1000:.1f}"  # noqa: E731
    return {
        "scenario": name,
        "intake p50/p95 ms": ms(intake),
        "…arrived at fake p50/p95 ms": ms(arrival),
        "1st token→visible p50/p95 ms": ms(first),
        "last token→final p50/p95 ms": ms(final),
        "writes/answer": f"{statistics.mean(s.writes for s in surfaces):.1f}",
        "CPU s/answer": f"{cpu / conversations:.4f}",
        "CPU s/1k tokens": f"{cpu / (conversations * words) * 1000:.4f}",
        "Redis trips/turn": f"{turn_trips / conversations:.1f}",
        "upkeep trips/s": f"{upkeep_rate:.1f}",
        "exact/ok": f"{exact}/{ok} of {conversations}",
    }


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server, so the round trips counted are the bot's alone."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return server, f"redis://127.0.0.1:{port}/0"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis", default=None,
                        help="Redis URL ('' for the embedded store; default: a private redis-server)")
    parser.add_argument("--tracing", action="store_true",
                        help="compare CPU per answer with traces exported to a local receiver and without")
    args = parser.parse_args()
    server = None
    if args.redis is None:
        server, args.redis = start_redis()
    try:
        rows = asyncio.run(tracing_scenarios(args.redis) if args.tracing else scenarios(args.redis))
    finally:
        if server:
            server.terminate()
    print_table(rows)


async def scenarios(redis_url: str) -> list[dict[str, str]]:
    return [
        await scenario("1 answer, 200 tok @ 20/s", 1, 200, 20, redis_url),
        await scenario("50 at once, 200 tok @ 20/s", 50, 200, 20, redis_url),
        await scenario("50 at once, 200 tok unpaced", 50, 200, None, redis_url),
    ]


def start_receiver() -> tuple[subprocess.Popen[str], str]:
    """The fake OTLP/HTTP collector (tests/fakes/otlp.py) in a process of its own."""
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-m", "tests.fakes.otlp", "--port", str(port)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    receiver.stdout.readline()  # it listens
    return receiver, f"http://127.0.0.1:{port}"


TRACING_ROUNDS = 4  # each mode this many times, alternating, on a machine others share too


async def tracing_scenarios(redis_url: str) -> list[dict[str, str]]:
    """The 50-answer scenario with tracing off and exporting over OTLP/HTTP to a receiver in its own
    process (its CPU is not the bot's), alternating; the median CPU per answer of each mode."""
    receiver, url = start_receiver()
    assert receiver.stdout is not None
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": url}
    cpu: dict[str, list[float]] = {"off": [], "exported": []}
    rows: list[dict[str, str]] = []
    try:
        for _ in range(TRACING_ROUNDS):
            for mode, extra in (("off", {}), ("exported", endpoint)):
                name = f"50 at once, 200 tok @ 20/s, tracing {mode}"
                row = await scenario(name, 50, 200, 20, redis_url, extra)
                cpu[mode].append(float(row["CPU s/answer"]))
                rows.append(row)
    finally:
        receiver.terminate()
        spans = receiver.stdout.read().strip()
        receiver.wait()
    off, on = statistics.median(cpu["off"]), statistics.median(cpu["exported"])
    print(f"median CPU s/answer: off {off:.4f}, exported {on:.4f} ({(on / off - 1) * 100:+.1f} %); "
          f"receiver: {spans}\n")
    return rows


def print_table(rows: list[dict[str, str]]) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(table(rows))
    print(f"\npeak resident memory of the bot process: {peak_mb:.0f} MB "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
