"""What more processes buy: Discord shards and Slack Socket Mode replicas, measured.

Every bot runs as in production (`python -m bot run`, a child process each), pointed
at the fakes in this process and at one Redis. The same load runs against:

- Discord, 1 process holding 3 shards (`DISCORD_SHARD_COUNT=3`);
- Discord, 3 processes holding 1 shard each (`DISCORD_SHARD_IDS=0`, `1`, `2`);
- Slack Socket Mode, 1 replica; and 3 replicas (Slack sends each event to one connection).

The load: `--answers` mentions (default 90) at once, spread over 9 channels (3 per
Discord server, one server per shard), each answered with 100 tokens at 50/s by the
fake model. Then a second process is started on a shard already held, and its exit
status and message are printed. Times are CLOCK_MONOTONIC, shared with the children;
CPU is the bot processes' together. Not a test: nothing here is asserted.

    python bench/scale_bench.py            # every scenario
    python bench/scale_bench.py --only Discord
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from common import cpu_seconds, delete_prefix, free_port, start_bot, stop_all, table, until_ready

from tests.fakes.discord import FakeDiscord
from tests.fakes.llm import FakeLLM
from tests.fakes.slack import FakeSlack
from tests.support.load import DiscordLoad, SlackLoad, tagged_answers
from tests.support.slack_fixtures import ALICE

SHARDS = 3
CHANNELS = 9
ANSWERED = re.compile(r'^chatbot_answers_total\{outcome="ok",platform="\w+"\} (\S+)$', re.MULTILINE)


@dataclass
class Scenario:
    name: str
    platform: str  # "discord" | "slack"
    processes: int


@dataclass
class Bots:
    processes: list[subprocess.Popen[bytes]]
    health_ports: list[int]
    ready_s: float  # from the first spawn until every process answered /readyz 200

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.processes)

    async def answered(self) -> list[int]:
        """chatbot_answers_total{outcome="ok"} of each process."""
        counts = []
        async with aiohttp.ClientSession() as session:
            for port in self.health_ports:
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    text = await response.text()
                counts.append(int(sum(float(v) for v in ANSWERED.findall(text))))
        return counts


def platform_env(scenario: Scenario, index: int, discord: FakeDiscord, slack: FakeSlack) -> dict[str, str]:
    common = {"SHUTDOWN_GRACE_SECONDS": "2", "HEALTH_PORT": str(free_port())}
    if scenario.platform == "slack":
        return common | {
            "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_API_URL": slack.api_url,
            "SLACK_APP_TOKEN": slack.app_token, "SLACK_MODE": "socket",
        }
    shards = {"DISCORD_SHARD_COUNT": str(SHARDS)}
    if scenario.processes > 1:
        shards["DISCORD_SHARD_IDS"] = str(index)
    return common | shards | {
        "DISCORD_BOT_TOKEN": discord.token,
        "DISCORD_API_URL": discord.api_url,
        "DISCORD_GATEWAY_URL": discord.gateway_url,
    }


@contextlib.asynccontextmanager
async def running_bots(
    scenario: Scenario, discord: FakeDiscord, slack: FakeSlack, llm: FakeLLM, redis_url: str, prefix: str
) -> AsyncIterator[Bots]:
    started = time.monotonic()
    processes, ports = [], []
    try:
        for index in range(scenario.processes):
            env = platform_env(scenario, index, discord, slack)
            ports.append(int(env["HEALTH_PORT"]))
            processes.append(start_bot(llm.url, redis_url, prefix, env))
        for port in ports:
            await until_ready(f"http://127.0.0.1:{port}/readyz")
        yield Bots(processes, ports, time.monotonic() - started)
    finally:
        stop_all(processes)


async def run(
    scenario: Scenario, answers: int, discord: FakeDiscord, slack: FakeSlack, llm: FakeLLM,
    redis_url: str, run_number: int,
) -> dict[str, str]:
    prefix = f"bench-scale-{uuid.uuid4().hex[:8]}"
    label = "abcdefgh"[run_number]
    llm.script = tagged_answers(100, 50)
    # The servers exist before the bots connect: each shard learns its own at READY.
    guilds = [discord.add_guild(f"{label}{k}", shard=(k, SHARDS)) for k in range(SHARDS)]
    person = discord.add_user(f"asker-{label}")
    for guild in guilds:
        guild.members[person.id] = person
    channels = [discord.add_text_channel(guilds[i % SHARDS], f"c{i}") for i in range(CHANNELS)]
    try:
        async with running_bots(scenario, discord, slack, llm, redis_url, prefix) as bots:
            cpu_before = bots.cpu()
            if scenario.platform == "discord":
                await discord.wait_for(lambda: len(discord.connected_shards()) == SHARDS, within=30)
                dload = DiscordLoad(fake=discord, llm=llm, live_answers=lambda: 0, grace=60, label=label)
                began = time.monotonic()
                await asyncio.gather(*(
                    dload.ask(channels[n % CHANNELS], person, dload.key(n, 1), mention=True)
                    for n in range(answers)
                ))
                summary = await dload.settle()
            else:
                sload = SlackLoad(fake=slack, llm=llm, live_answers=lambda: 0, grace=60, label=label)

                async def push(event: dict[str, Any]) -> None:
                    await slack.push_event(event)

                sload.deliver = push
                await slack.wait_for(lambda: slack.connected == scenario.processes, within=30)
                began = time.monotonic()
                summary = await sload.run(answers, 1, channel=lambda n: f"C{label}{n % CHANNELS}")
            elapsed = time.monotonic() - began
            summary.cpu = bots.cpu() - cpu_before
            # A process counts an answer once it is stored, just after its final text shows.
            per_process = await bots.answered()
            deadline = time.monotonic() + 10
            while sum(per_process) < summary.exact and time.monotonic() < deadline:
                await asyncio.sleep(0.2)  # polling the children's /metrics
                per_process = await bots.answered()
            row = summary.row(scenario.name)
            row.pop("follow-up intake p50 / max")
            row.pop("max partial after end")
            return {
                **row,
                "answers/s": f"{summary.exact / elapsed:.1f}",
                "answered per process": " + ".join(map(str, per_process)),
                "ready after": f"{bots.ready_s:.1f} s",
            }
    finally:
        await delete_prefix(redis_url, prefix)


async def duplicate_shard(discord: FakeDiscord, slack: FakeSlack, llm: FakeLLM, redis_url: str) -> str:
    """Start a process on shard 1, then another on shards 1-2: what the second says."""
    prefix = f"bench-scale-{uuid.uuid4().hex[:8]}"
    scenario = Scenario("", "discord", 3)
    first = start_bot(llm.url, redis_url, prefix, platform_env(scenario, 1, discord, slack))
    try:
        await discord.wait_for(lambda: (1, SHARDS) in discord.connected_shards(), within=30)
        env = platform_env(scenario, 1, discord, slack) | {"DISCORD_SHARD_IDS": "1-2"}
        second = start_bot(llm.url, redis_url, prefix, env, stderr=subprocess.PIPE)
        _, err = await asyncio.to_thread(second.communicate, timeout=60)
        lines = err.decode().strip().splitlines()
        return f"exit {second.returncode}: {lines[-1] if lines else '(nothing on stderr)'}"
    finally:
        stop_all([first])
        await delete_prefix(redis_url, prefix)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="REDIS_URL for the bots")
    parser.add_argument("--answers", type=int, default=90, help="mentions at once per scenario")
    parser.add_argument("--only", default="", help="run the scenarios whose name contains this")
    args = parser.parse_args()
    scenarios = [
        Scenario("Discord, 1 process × 3 shards", "discord", 1),
        Scenario("Discord, 3 processes × 1 shard", "discord", 3),
        Scenario("Slack Socket Mode, 1 replica", "slack", 1),
        Scenario("Slack Socket Mode, 3 replicas", "slack", 3),
    ]
    scenarios = [s for s in scenarios if args.only in s.name]
    rows = []
    async with FakeDiscord() as discord, FakeSlack() as slack, FakeLLM() as llm:
        slack.add_user(dataclasses.replace(ALICE))
        for number, scenario in enumerate(scenarios):
            print(f"running: {scenario.name}…", file=sys.stderr)
            rows.append(await run(scenario, args.answers, discord, slack, llm, args.redis, number))
            await asyncio.sleep(5.5)  # every shared pacing window back to empty: the bench's schedule
        duplicate = await duplicate_shard(discord, slack, llm, args.redis) if args.only in "Discord" else ""
    print(table(rows))
    print()
    print(f"{args.answers} mentions at once over {CHANNELS} channels, 100 tokens at 50/s each. CPU is")
    print("every bot process's together; 'ready after' is from the first spawn to every /readyz 200.")
    if duplicate:
        print(f"A second process on a held shard (DISCORD_SHARD_IDS=1-2 while 1 runs): {duplicate}")


if __name__ == "__main__":
    asyncio.run(main())
