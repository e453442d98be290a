"""Benchmark of the fallback chain: how long a question waits for visible text when its model is down.

The models are fake servers in processes of their own, each sending its first token after
300 ms; the bot (in this process) answers one question at a time, each in a new conversation,
with a private Redis. Question → first visible text, for:

- the primary healthy (the reference);
- the primary refusing connections, and answering 503: the chain moves on (one retry first);
- the primary's breaker open: the dead model is not asked at all.

    python bench/fallback_bench.py [--questions 20]

Targets (issue 25): primary down ≤ 1.5 s, breaker open ≤ 0.5 s. Prints a Markdown table;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid

from common import ROOT, free_port, pct, table
from core_bench import BenchSurface, start_redis

from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.contract import Author, ConversationKey, Turn

FIRST_TOKEN = 0.3  # seconds: the fake models' first token
PRIMARY, SPARE = "bench/primary", "bench/spare"


def start_model(fail: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "tests.fakes.llm", "--port", str(port), "--words", "40", "--rate", "40",
               "--first-token-delay", str(FIRST_TOKEN)]
    process = subprocess.Popen(command + (["--fail", fail] if fail else []), cwd=ROOT, stdout=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.readline()  # it listens
    return process, f"http://127.0.0.1:{port}/v1"


async def scenario(name: str, primary_url: str, spare_url: str, redis_url: str, questions: int,
                   open_breaker: bool = False) -> dict[str, str]:
    env = {
        "TOGETHER_API_KEY": "bench", "REDIS_URL": redis_url, "REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "TOGETHER_BASE_URL": primary_url, "BOT_MODEL": PRIMARY,
        "PROVIDER_SPARE_BASE_URL": spare_url, "PROVIDER_SPARE_API_KEY": "bench",
        "BOT_FALLBACK_MODELS": f"spare:{SPARE}",
        # Closed unless the scenario opens it: each question meets the dead model afresh.
        "MODEL_BREAKER_FAILURES": "1" if open_breaker else "100000", "MODEL_BREAKER_OPEN_SECONDS": "3600",
    }
    waits: list[float] = []
    answered_by: set[str] = set()
    async with open_engine(load_settings(env, dotenv=False)) as engine:
        if open_breaker:
            await engine.breakers.failed(PRIMARY)  # as the first failure would, on any replica
        for i in range(questions + 1):  # the first warms the pools up and is not counted
            surface = BenchSurface()
            turn = Turn(ConversationKey("bench", "W", "C", f"T{i}"), Author("U", "user"), f"question {i}",
                        f"m{i}", surface)
            turn.received_at = time.monotonic()
            outcome = await engine.answer(turn)
            if i and surface.first_visible is not None:
                waits.append(surface.first_visible - turn.received_at)
                answered_by.add(outcome.model)
    return {
        "scenario": name,
        "question → first visible p50 / p95 / max ms": " / ".join(
            f"{v * 1000:.0f}" for v in (pct(waits, 0.5), pct(waits, 0.95), max(waits))),
        "answered": f"{len(waits)} of {questions}",
        "by": ", ".join(sorted(answered_by)),
    }


async def scenarios(redis_url: str, questions: int) -> list[dict[str, str]]:
    healthy, healthy_url = start_model()
    failing, failing_url = start_model("503")
    spare, spare_url = start_model()
    refused = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    try:
        return [
            await scenario("primary healthy (reference)", healthy_url, spare_url, redis_url, questions),
            await scenario("primary refuses connections", refused, spare_url, redis_url, questions),
            await scenario("primary answers 503", failing_url, spare_url, redis_url, questions),
            await scenario("primary's breaker open", failing_url, spare_url, redis_url, questions,
                           open_breaker=True),
        ]
    finally:
        for process in (healthy, failing, spare):
            process.terminate()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=20)
    args = parser.parse_args()
    server, redis_url = start_redis()
    try:
        rows = asyncio.run(scenarios(redis_url, args.questions))
    finally:
        server.terminate()
    print(table(rows))
    print(f"\nmodels' first token after {FIRST_TOKEN * 1000:.0f} ms; targets: primary down ≤ 1500 ms, "
          "breaker open ≤ 500 ms")


if __name__ == "__main__":
    main()
