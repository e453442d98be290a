"""Soak: Slack HTTP replicas and Discord processes on one Redis Cluster, conversations arriving
at a steady rate for minutes, Slack's and Discord's limits enforced by the fakes (issue 11).

    python bench/soak.py                       # 300 conversations × 3 turns over 5 minutes
    python bench/soak.py --quick               # 40 conversations over 40 s: a smoke run
    python bench/soak.py --conversations 120 --duration 120
    python bench/soak.py --single              # on one local redis-server instead of a cluster
    python bench/soak.py --redis redis://127.0.0.1:6379/0   # an existing Redis (or cluster node)

Without `--redis` it starts a Redis Cluster of six local nodes (three masters, one replica
each: tests/support/redis_cluster.py), or one redis-server with `--single`, and stops it after: a
Redis of its own, so its round-trip counts hold nobody else's commands. Every bot runs as in production
(`python -m bot run`, REDIS_URL naming one node, the cluster found out at start): `--slack`
Slack replicas in HTTP mode behind a round-robin "load balancer", `--discord` Discord processes
on one fake gateway, one shard each (`DISCORD_SHARD_COUNT`, `DISCORD_SHARD_IDS`: the fake routes
each server's events to its shard). Conversations alternate between Slack threads and Discord
channels (one server per shard, the channels spread over them), one starting every
duration / conversations seconds; a follow-up is sent 1 s after the answer's last token.

Prints one table: answers per second, intake, first visible text and final text lags, 429s,
CPU per answer, Redis round trips per turn, RSS of every bot process at the start and the end,
errors. Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import redis
from common import cpu_seconds, free_port, start_bot, table, until_ready
from slack_bench import ASKER, SECRET, quiet

from tests.fakes.discord import FakeDiscord
from tests.fakes.llm import FakeLLM
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_events import SignedSender
from tests.support.load import DiscordLoad, Load, SlackLoad, tagged_answers
from tests.support.measure import Summary, claim, fmt_s, loose_whitespace, percentile, stream_of
from tests.support.redis_cluster import LocalCluster

ERROR_MARKS = (" ERROR ", "Traceback", "CRITICAL")


@dataclass
class Bot:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    rss_start: int = 0  # kB
    rss_end: int = 0
    cpu_start: float = 0.0
    cpu_end: float = 0.0

    def errors(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines()
                if any(mark in line for mark in ERROR_MARKS)]


@dataclass
class Fleet:
    bots: list[Bot] = field(default_factory=list)

    def mark(self, end: bool) -> None:
        for bot in self.bots:
            rss, cpu = rss_kb(bot.process.pid), cpu_seconds(bot.process.pid)
            if end:
                bot.rss_end, bot.cpu_end = rss, cpu
            else:
                bot.rss_start, bot.cpu_start = rss, cpu

    @property
    def cpu(self) -> float:
        return sum(b.cpu_end - b.cpu_start for b in self.bots)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---- Redis: the cluster, and counting its round trips ------------------------------------------


def masters(url: str) -> list[tuple[str, int]]:
    """The nodes that take the bot's writes: the masters of a cluster, or the one server."""
    node = redis.Redis.from_url(url, decode_responses=True)
    try:
        if not node.info("cluster").get("cluster_enabled"):
            where = node.connection_pool.connection_kwargs
            return [(where["host"], where["port"])]
        out = []
        for line in str(node.execute_command("CLUSTER", "NODES")).splitlines():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2]:
                host, port = fields[1].split("@")[0].rsplit(":", 1)
                out.append((host, int(port)))
        return out
    finally:
        node.close()


def reads(nodes: list[tuple[str, int]]) -> int:
    """Read events summed over `nodes` (INFO stats): one per round trip that reached a node,
    a pipeline's commands arriving together. (Its command count would include every call a
    Lua script makes, so it says little about trips.)"""
    total = 0
    for host, port in nodes:
        node = redis.Redis(host=host, port=port)
        try:
            total += int(node.info("stats")["total_reads_processed"])
        finally:
            node.close()
    return total


def delete_prefix(url: str, prefix: str) -> None:
    for host, port in masters(url):
        node = redis.Redis(host=host, port=port)
        try:
            keys = list(node.scan_iter(match=f"{prefix}:*", count=1000))
            for key in keys:  # one by one: on a cluster they live in many slots
                node.delete(key)
        finally:
            node.close()


@contextlib.contextmanager
def redis_for(url: str | None, single: bool) -> Any:
    """`url`, or a Redis of the run's own (nobody else's commands in its counts)."""
    if url:
        yield url
        return
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("no --redis given and no redis-server installed to start one with")
    if single:
        port = free_port()
        process = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no"], stdout=subprocess.DEVNULL)
        try:
            LocalCluster._wait(lambda: redis.Redis(port=port).ping(), "redis-server to answer")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.kill()
            process.wait()
        return
    with tempfile.TemporaryDirectory(prefix="soak-cluster-") as directory:
        cluster = LocalCluster(Path(directory))
        cluster.start()
        try:
            yield cluster.url
        finally:
            cluster.stop()


# ---- the bots -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fleet(
    args: argparse.Namespace, slack: FakeSlack, discord: FakeDiscord, llm: FakeLLM, url: str,
    prefix: str, logs: Path,
) -> AsyncIterator[tuple[Fleet, Any]]:
    bots = Fleet()
    senders: list[SignedSender] = []
    ports = [free_port() for _ in range(args.slack)]
    try:
        for n, port in enumerate(ports):
            env = {
                "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_API_URL": slack.api_url,
                "SLACK_SIGNING_SECRET": SECRET, "SLACK_MODE": "http", "SLACK_PORT": str(port),
                "SHUTDOWN_GRACE_SECONDS": "2",
            }
            log = logs / f"slack-{n}.log"
            bots.bots.append(Bot(f"slack http {n}", start_bot(llm.url, url, prefix, env, log=log), log))
        for n in range(args.discord):
            env = {
                "DISCORD_BOT_TOKEN": discord.token, "DISCORD_API_URL": discord.api_url,
                "DISCORD_GATEWAY_URL": discord.gateway_url, "SHUTDOWN_GRACE_SECONDS": "2",
                "DISCORD_SHARD_COUNT": str(args.discord), "DISCORD_SHARD_IDS": str(n),
            }
            log = logs / f"discord-{n}.log"
            bots.bots.append(Bot(f"discord {n}", start_bot(llm.url, url, prefix, env, log=log), log))
        for port in ports:
            await until_ready(f"http://127.0.0.1:{port}/readyz", within=60)
            senders.append(SignedSender(f"http://127.0.0.1:{port}/slack/events", SECRET))
        await discord.wait_for(lambda: len(discord.connected_shards()) == args.discord, within=60)
        turn = count()

        async def spread(event: dict[str, Any]) -> None:
            await senders[next(turn) % len(senders)].send_event(slack.callback(event))

        yield bots, spread
    finally:
        for sender in senders:
            await sender.close()
        for bot in bots.bots:
            bot.process.terminate()
        for bot in bots.bots:
            try:
                bot.process.wait(30)
            except subprocess.TimeoutExpired:
                bot.process.kill()


# ---- the run ------------------------------------------------------------------------------------


def first_visible(load: Load, fake: FakeSlack | FakeDiscord) -> list[float]:
    """Question sent → the first text of its answer on screen, per answer."""
    texts = {}
    for asked in load.asked:
        stream = stream_of(load.llm, asked.key)
        if stream is not None:
            texts[asked.key] = loose_whitespace(stream.text)
    timelines = [t for t in fake.timelines.values() if t.shown and t.shown[0].at >= load.started]
    owned, _ = claim(timelines, texts, loose_whitespace)
    out = []
    for asked in load.asked:
        shown = [s.at for t in owned.get(asked.key, []) for s in t.shown if s.text.strip()]
        if shown:
            out.append(min(shown) - asked.sent_at)
    return out


async def soak(args: argparse.Namespace, url: str) -> None:
    prefix = f"soak-{uuid.uuid4().hex[:8]}"
    logs = Path(tempfile.mkdtemp(prefix="soak-logs-"))
    nodes = masters(url)
    async with FakeSlack() as slack, FakeDiscord() as discord, FakeLLM() as llm:
        slack.add_user(ASKER)
        # The servers and channels exist before the bots connect: each shard learns its own at READY.
        guilds = [discord.add_guild(f"soak{k}", shard=(k, args.discord)) for k in range(args.discord)]
        people = [discord.add_user(f"soaker{k}", guild=guild) for k, guild in enumerate(guilds)]
        warm_channels = [discord.add_text_channel(g, f"warm{k}") for k, g in enumerate(guilds)]
        channels = {n: discord.add_text_channel(guilds[n % len(guilds)], f"c{n}")
                    for n in range(1, args.conversations, 2)}
        async with fleet(args, slack, discord, llm, url, prefix, logs) as (bots, deliver):
            # Warm up: a few quick answers on each platform, so pools have grown.
            llm.script = tagged_answers(1, 0.0)
            warm_slack = SlackLoad(fake=slack, llm=llm, deliver=deliver, live_answers=lambda: 0,
                                   grace=30, user=ASKER.id, label="ws")
            warm_discord = DiscordLoad(fake=discord, llm=llm, live_answers=lambda: 0, grace=30, label="wd")
            await asyncio.gather(
                warm_slack.run(args.slack * 4, 1, channel=lambda n: f"CW{n:03d}"),
                *(warm_discord.ask(c, people[k], warm_discord.key(k, 1), mention=True)
                  for k, c in enumerate(warm_channels)),
            )
            await warm_discord.settle()
            await quiet(slack, 0.5)

            # What Redis serves while nobody asks anything (heartbeats, replication), to subtract.
            idle_from, idle_at = reads(nodes), time.monotonic()
            await asyncio.sleep(5.0)
            idle_to = reads(nodes)
            idle_rate = (idle_to - idle_from) / (time.monotonic() - idle_at)

            slack.enforce_limits()
            llm.script = tagged_answers(args.tokens, args.rate)
            slack_load = SlackLoad(fake=slack, llm=llm, deliver=deliver, live_answers=lambda: 0,
                                   grace=args.grace, user=ASKER.id, label="s")
            discord_load = DiscordLoad(fake=discord, llm=llm, live_answers=lambda: 0, grace=args.grace,
                                       label="d")
            gap = args.duration / args.conversations
            print(f"soak: {args.conversations} conversations × {args.turns} turns, one every {gap:.2f} s, "
                  f"over {args.slack} Slack + {args.discord} Discord processes…", file=sys.stderr)

            async def discord_conversation(n: int) -> None:
                await asyncio.sleep(n * gap)  # the arrival schedule
                person = people[n % len(people)]
                await discord_load.ask(channels[n], person, discord_load.key(n, 1), mention=True)
                for turn in range(2, args.turns + 1):  # each turn mentions the bot again
                    if not await discord_load.next_turn(n, turn):
                        return
                    await discord_load.ask(channels[n], person, discord_load.key(n, turn), mention=True)

            bots.mark(end=False)
            before, started = reads(nodes), time.monotonic()
            await asyncio.gather(*(
                slack_load.conversation(f"C{n:04d}", n, args.turns, start=n * gap) if n % 2 == 0
                else discord_conversation(n)
                for n in range(args.conversations)
            ))
            await asyncio.gather(slack_load.settle(), discord_load.settle())
            await quiet(slack)
            ended = time.monotonic()
            after = reads(nodes)
            bots.mark(end=True)
            slack_summary, discord_summary = slack_load.summary(), discord_load.summary()
            visible = first_visible(slack_load, slack) + first_visible(discord_load, discord)

    turns = len(slack_load.asked) + len(discord_load.asked)
    print(table(rows(args, slack_summary, discord_summary, visible, bots, turns, ended - started,
                     after, before, idle_rate, url)))
    print()
    print(table([{"process": b.name, "RSS start MB": f"{b.rss_start / 1024:.0f}",
                  "RSS end MB": f"{b.rss_end / 1024:.0f}",
                  "growth": f"{(b.rss_end - b.rss_start) / max(1, b.rss_start):+.0%}",
                  "CPU s": f"{b.cpu_end - b.cpu_start:.1f}", "log errors": str(len(b.errors()))}
                 for b in bots.bots]))
    for bot in bots.bots:
        for line in bot.errors()[:3]:
            print(f"{bot.name}: {line}")
    print()
    print(f"answers of {args.tokens} tokens at {args.rate:.0f} tokens/s; Slack's limits (chat.update")
    print("50/min per workspace, chat.postMessage 1/s per channel) and Discord's (5 per 5 s per channel,")
    print("50/s per bot) enforced by the fakes. intake = question sent → model request; first visible =")
    print("question sent → its first text on screen; final = last token → final text shown for good.")
    print("Redis round trips = read events on the masters (INFO stats total_reads_processed: one per")
    print("request or pipeline reaching a node), less the idle rate measured before the run")
    print("(heartbeats, replication acks).")
    print(f"bot logs: {logs}")
    with contextlib.suppress(redis.RedisError):
        delete_prefix(url, prefix)


def rows(
    args: argparse.Namespace, slack: Summary, discord: Summary, visible: list[float], bots: Fleet,
    turns: int, seconds: float, after: int, before: int, idle_rate: float,
    url: str,
) -> list[dict[str, str]]:
    out = []
    answers = len(slack.answers) + len(discord.answers)
    exact = slack.exact + discord.exact
    intakes = slack.intakes + discord.intakes
    lags = slack.lags + discord.lags
    trips = (after - before) - idle_rate * seconds
    errors = sum(len(b.errors()) for b in bots.bots)
    wrong = (slack.total - slack.exact) + (discord.total - discord.exact) + slack.stray + discord.stray
    store = "Redis Cluster" if len(masters(url)) > 1 else "Redis"
    out.append({
        "run": f"{args.conversations} × {args.turns} turns, {seconds:.0f} s, "
               f"{args.slack} Slack + {args.discord} Discord shards on {store}",
        "answers/s": f"{exact / seconds:.2f}",
        "exact": f"{exact}/{slack.total + discord.total}",
        "intake p50 / p95": f"{fmt_s(percentile(intakes, 0.5))} / {fmt_s(percentile(intakes, 0.95))}",
        "first visible p50 / p95": f"{fmt_s(percentile(visible, 0.5))} / {fmt_s(percentile(visible, 0.95))}",
        "final p50 / p95": f"{fmt_s(percentile(lags, 0.5))} / {fmt_s(percentile(lags, 0.95))}",
        "429s / writes (Slack, Discord)":
            f"{slack.limited} / {slack.writes}, {discord.limited} / {discord.writes}",
        "CPU / answer ms": f"{bots.cpu / max(1, answers) * 1000:.0f}",
        "Redis trips / turn": f"{trips / max(1, turns):.1f}",
        "errors": f"{errors} logged, {wrong} answers wrong or stray",
    })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--redis", default=None, help="REDIS_URL for the bots (default: a local cluster)")
    parser.add_argument("--single", action="store_true", help="a local single redis-server, not a cluster")
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--duration", type=float, default=300.0, help="s over which conversations arrive")
    parser.add_argument("--slack", type=int, default=3, help="Slack HTTP replicas")
    parser.add_argument("--discord", type=int, default=3, help="Discord processes, one shard each")
    parser.add_argument("--tokens", type=int, default=60, help="tokens per answer")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second")
    parser.add_argument("--grace", type=float, default=75.0, help="s to wait for finals at the end")
    parser.add_argument("--quick", action="store_true", help="40 conversations over 40 s")
    args = parser.parse_args()
    if args.quick:
        args.conversations, args.duration, args.grace = 40, 40.0, 30.0
    with redis_for(args.redis, args.single) as url:
        asyncio.run(soak(args, url))


if __name__ == "__main__":
    main()
