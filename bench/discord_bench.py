"""Benchmark of the Discord bot over the fakes, with Discord-like limits.

The bot runs as it does in production (`python -m bot run`) in a child
process, pointed at a fake Discord (5 creates and 5 edits per 5 s per
channel, 50 requests/s per bot) and a fake model server, both in this
process. Times come from CLOCK_MONOTONIC, shared by both processes; the CPU
figure is the bot process's alone.

    python bench/discord_bench.py               # the standard scenarios
    python bench/discord_bench.py --quick       # shorter answers, for a smoke run

Scenarios: one answer at 20 tokens/s × 200 tokens; one 3,000-token answer at
200 tokens/s; 50 simultaneous answers in 50 channels; 10 in one channel.
Prints a Markdown table. Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

from common import cpu_seconds, delete_prefix, ms, start_bot, table

from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_payloads import JSON, Channel
from tests.fakes.llm import Answer, FakeLLM, StreamLog


@dataclass
class Scenario:
    name: str
    channels: int
    answers: int  # spread evenly over the channels
    tokens: int
    rate: float


@dataclass
class Measured:
    """One answer, measured from the fakes' records."""

    intake: float
    first_visible: float
    final_lag: float
    writes: int
    updates_per_second: float
    exact: bool








def start_discord_bot(
    fake: FakeDiscord, llm: FakeLLM, redis_url: str, prefix: str
) -> subprocess.Popen[bytes]:
    return start_bot(llm.url, redis_url, prefix, {
        "DISCORD_BOT_TOKEN": fake.token,
        "DISCORD_API_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
    })


class Bench:
    def __init__(self, fake: FakeDiscord, llm: FakeLLM) -> None:
        self.fake = fake
        self.llm = llm
        self.guild = fake.add_guild("Bench")
        self.user = fake.add_user("bencher", guild=self.guild)
        self.asked_at: dict[str, float] = {}  # "Name: text" -> when the message was dispatched

    def new_channels(self, count: int, label: str) -> list[Channel]:
        return [self.fake.add_text_channel(self.guild, f"{label}-{i}") for i in range(count)]

    async def ask(self, channel: Channel, text: str) -> JSON:
        self.asked_at[f"{self.user.display_name}: {text}"] = time.monotonic()
        return await self.fake.user_message(channel, self.user, f"{self.fake.bot.mention} {text}")

    def answer_messages(self, channel: Channel, asked: JSON) -> list[JSON]:
        """The bot's messages answering `asked`: a reply to it, then each part replying to the last."""
        replies = {
            m["message_reference"]["message_id"]: m
            for m in self.fake.bot_messages(channel)
            if m.get("message_reference")
        }
        parts, current = [], asked["id"]
        while current in replies:
            parts.append(replies[current])
            current = parts[-1]["id"]
        return parts

    def measure(self, channel: Channel, asked: JSON, stream: StreamLog, expected: str) -> Measured:
        parts = self.answer_messages(channel, asked)
        ids = {p["id"] for p in parts}
        writes = [c for c in self.fake.writes(channel) if c.status == 200 and c.message_id in ids]
        first_create = min(c.at for c in writes if c.method == "POST")
        final = max(c.at for c in writes)
        assert stream.first_token is not None and stream.last_token is not None
        during = [c for c in writes if c.at <= stream.last_token]
        streaming = max(stream.last_token - stream.first_token, 1e-9)
        shown = " ".join("\n".join(p["content"] for p in parts).split())
        return Measured(
            intake=stream.arrived - self.asked_at[stream.last_user_message],
            first_visible=first_create - stream.first_token,
            final_lag=final - stream.last_token,
            writes=len(writes),
            updates_per_second=len(during) / streaming,
            exact=shown == " ".join(expected.split()),
        )

    async def run(self, scenario: Scenario, bot_pid: int) -> dict[str, str]:
        channels = self.new_channels(scenario.channels, scenario.name.split()[0])
        answer = Answer.words(scenario.tokens, tokens_per_second=scenario.rate)
        self.llm.answer = answer
        streams_before = len(self.llm.streams)
        calls_before = len(self.fake.calls)
        cpu_before = cpu_seconds(bot_pid)

        asked = [
            (
                channels[i % len(channels)],
                await self.ask(channels[i % len(channels)], f"{scenario.name} #{i}"),
            )
            for i in range(scenario.answers)
        ]
        expected_writes = scenario.answers
        deadline = time.monotonic() + scenario.tokens / scenario.rate + 120
        while time.monotonic() < deadline:
            streams = self.llm.streams[streams_before:]
            done = len(streams) == expected_writes and all(s.last_token for s in streams)
            if done and all(
                " ".join("\n".join(p["content"] for p in self.answer_messages(ch, msg)).split())
                == " ".join(answer.text.split())
                for ch, msg in asked
            ):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # let stray writes (if any) arrive before counting
        cpu = cpu_seconds(bot_pid) - cpu_before

        by_text = {s.last_user_message: s for s in self.llm.streams[streams_before:]}
        results = [
            self.measure(ch, msg, by_text[f"{self.user.display_name}: {scenario.name} #{i}"], answer.text)
            for i, (ch, msg) in enumerate(asked)
        ]
        limited = [c for c in self.fake.calls[calls_before:] if c.status == 429]


        return {
            "scenario": scenario.name,
            "intake ms": ms([r.intake for r in results]),
            "first token → first text ms": ms([r.first_visible for r in results]),
            "last token → final text ms": ms([r.final_lag for r in results]),
            "writes / answer": f"{statistics.mean(r.writes for r in results):.1f}",
            "updates / s": f"{statistics.mean(r.updates_per_second for r in results):.2f}",
            "429s": str(len(limited)),
            "CPU / answer ms": f"{cpu / scenario.answers * 1000:.0f}",
            "final text exact": f"{sum(r.exact for r in results)}/{len(results)}",
        }




async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="REDIS_URL for the bot")
    parser.add_argument("--quick", action="store_true", help="shorter answers (smoke run)")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    scenarios = [
        Scenario("one answer, 200 tokens at 20/s", 1, 1, int(200 * scale), 20),
        Scenario("one answer, 3,000 tokens at 200/s", 1, 1, int(3000 * scale), 200),
        Scenario("50 at once in 50 channels", 50, 50, int(200 * scale), 20),
        Scenario("10 at once in one channel", 1, 10, int(200 * scale), 20),
    ]
    prefix = f"bench-discord-{uuid.uuid4().hex[:8]}"
    async with FakeDiscord() as fake, FakeLLM() as llm:
        bench = Bench(fake, llm)
        warmup = bench.new_channels(1, "warmup")[0]
        bot = start_discord_bot(fake, llm, args.redis, prefix)
        try:
            await fake.wait_for(lambda: fake.connected and None in fake.commands, within=30)
            llm.answer = Answer.words(5)
            asked = await bench.ask(warmup, "warm up")
            await fake.wait_for(lambda: bool(bench.answer_messages(warmup, asked)), within=30)
            rows = []
            for scenario in scenarios:
                await asyncio.sleep(5.5)  # every shared window back to empty
                print(f"running: {scenario.name}…", file=sys.stderr)
                rows.append(await bench.run(scenario, bot.pid))
        finally:
            bot.terminate()
            bot.wait(30)
            await delete_prefix(args.redis, prefix)
    print(table(rows))
    print()
    print("intake = message sent → model request; ms columns are p50 / p95 when several answers;")
    print("writes = message creates + edits that landed; updates / s = writes while the model streamed.")


if __name__ == "__main__":
    asyncio.run(main())
