"""What a person sees when things break, and how soon: one run per fault, with the default
settings, the real slack-bolt against the fake Slack and model, and a redis-server of its
own that it kills and restarts.

    python bench/faults_bench.py            # every row (the silent model takes a minute)
    python bench/faults_bench.py --quick    # MODEL_FIRST_TOKEN_TIMEOUT=5 for that row
    python bench/faults_bench.py --untrusted  # only the second table: hostile files and requests
    python bench/faults_bench.py --untrusted --no-ten  # without the ten bombs at once

The second table (bench/untrusted_rows.py) sends what an attacker or an unlucky operator
would: a PDF bomb, an inflating stream, a 196-megapixel PNG, ten bombs at once, five large
screenshots, a model API that answers 413, a file link to another host.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import aiohttp
import untrusted_rows
from common import table

from bot import engine as engine_module
from bot.contract import ConversationKey
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack_events import sign
from tests.support.private_redis import PrivateRedis
from tests.support.slack_fixtures import ALICE, BOT, SECRET, SlackRig, slack_rig

Row = tuple[str, str, str, str]


def env_for(server: PrivateRedis) -> dict[str, str]:
    return {"TOGETHER_API_KEY": "bench-key", "REDIS_URL": server.url,
            "REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}", "BOT_MODEL": "bench/model",
            "LLM_RETRY_BASE_DELAY": "0.5"}


def written(rig: SlackRig) -> str:
    return json.dumps([c.params for c in rig.fake.writes()], ensure_ascii=False)


async def redis_down(server: PrivateRedis, llm: FakeLLM) -> Row:
    async with slack_rig(env_for(server), llm) as rig:
        llm.answer = Answer.of("Answered without Redis.")
        server.kill()
        start = time.monotonic()
        msg = await rig.say("C1", ALICE, f"<@{BOT}> are you there?")
        await rig.wait_reply(msg, "Answered without Redis.")
        took = time.monotonic() - start
        server.start()
        await server.ready()
        return ("Redis down, someone mentions the bot", "the answer (history from Slack)",
                f"{took * 1000:.0f} ms to the final text", "nothing (answered, once)")


async def redis_dies_mid_answer(server: PrivateRedis, llm: FakeLLM) -> Row:
    async with slack_rig(env_for(server), llm) as rig:
        llm.answer = Answer.words(40, tokens_per_second=20)
        msg = await rig.say("C1", ALICE, f"<@{BOT}> a long one")
        await rig.fake.wait_for(lambda: rig.fake.bot_replies("C1", msg.ts))
        server.kill()
        killed = time.monotonic()
        await rig.wait_reply(msg, llm.answer.text, within=30)
        took = time.monotonic() - killed
        extra = len(rig.fake.bot_replies("C1", msg.ts)) - 1
        server.start()
        await server.ready()
        return ("Redis dies mid-answer", f"the whole answer, then nothing ({extra} extra messages)",
                f"{took * 1000:.0f} ms from the kill to the final text (the rest of the answer streaming)",
                "nothing (the answer is in the thread; the next turn reads it from Slack)")


async def post(rig: SlackRig, body: bytes, headers: dict[str, str]) -> tuple[int, float]:
    url = f"http://127.0.0.1:{rig.adapter.port}/slack/events"
    start = time.monotonic()
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as reply:
        return reply.status, time.monotonic() - start


async def bad_timestamp(server: PrivateRedis, llm: FakeLLM, log: io.StringIO) -> Row:
    async with slack_rig(env_for(server), llm, mode="http") as rig:
        log.truncate(0)
        body = json.dumps(rig.fake.callback({"type": "app_mention", "text": "hi"}))
        status, took = await post(rig, body.encode(), {
            "Content-Type": "application/json", "X-Slack-Request-Timestamp": "notanumber",
            "X-Slack-Signature": sign(SECRET, str(int(time.time())), body)})
        tracebacks = log.getvalue().count("Traceback")
        return ("`X-Slack-Request-Timestamp: notanumber`", f"(Slack gets {status}; {tracebacks} tracebacks)",
                f"{took * 1000:.1f} ms", "nothing")


async def forged_bodies(server: PrivateRedis, llm: FakeLLM, log: io.StringIO) -> Row:
    async with slack_rig(env_for(server), llm, mode="http") as rig:
        log.seek(0)
        log.truncate(0)
        body = b'{"token": "' + b"x" * 1_000_000 + b'"}'
        headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": str(int(time.time())),
                   "X-Slack-Signature": "v0=" + "0" * 64}
        results = [await post(rig, body, headers) for _ in range(2)]
        logged = len(log.getvalue().encode())
        statuses = ", ".join(str(s) for s, _ in results)
        return ("two forged 1 MB bodies", f"(Slack gets {statuses}; {logged} bytes of log in all)",
                f"{max(t for _, t in results) * 1000:.1f} ms", "nothing")


async def broadcast(server: PrivateRedis, llm: FakeLLM) -> Row:
    async with slack_rig(env_for(server), llm) as rig:
        llm.answer = Answer.of("Hi <!channel> <!here> <!everyone> <!subteam^S1|@ops>", chunk=3)
        start = time.monotonic()
        msg = await rig.say("C1", ALICE, f"<@{BOT}> say hi")
        await rig.fake.wait_for(lambda: "subteam" in rig.fake.seen_text("C1", msg.ts)
                                and rig.engine.live_answers == 0)
        took = time.monotonic() - start
        text = written(rig)
        live = sum(text.count(t) for t in ("<!channel", "<!here", "<!everyone", "<!subteam"))
        return ("model text `<!channel> <!here> <!everyone> <!subteam^…>`",
                f"the text, inert (`＜!channel>`); {live} live tokens sent", f"{took * 1000:.0f} ms",
                "nothing")


async def silent_model(server: PrivateRedis, llm: FakeLLM, budget: str | None) -> Row:
    extra = {"MODEL_FIRST_TOKEN_TIMEOUT": budget} if budget else {}
    async with slack_rig(env_for(server), llm, **extra) as rig:
        llm.fail_next("hang", times=50)
        start = time.monotonic()
        msg = await rig.say("C1", ALICE, f"<@{BOT}> hello?")
        await rig.fake.wait_for(lambda: rig.fake.bot_replies("C1", msg.ts), 120)
        took = time.monotonic() - start
        slow_at = [s.at - start for s in rig.fake.statuses if s.status == engine_module.SLOW_STATUS]
        slow = f"at {slow_at[0]:.1f} s" if slow_at else "(not reached)"
        attempts = len(llm.requests)
        llm.answer = Answer.of("ok")
        said = rig.fake.seen_text("C1", msg.ts)[:40]
        return ("model accepts the connection and never answers",
                f"\"is waiting for the model…\" {slow}, then \"{said}…\"",
                f"{took:.1f} s ({attempts} attempts; MODEL_FIRST_TOKEN_TIMEOUT={budget or 60})",
                "nothing (the person is told to ask again)")


async def surrogate(server: PrivateRedis, llm: FakeLLM) -> Row:
    async with slack_rig(env_for(server), llm) as rig:
        llm.answer = Answer.of("Got it.")
        start = time.monotonic()
        msg = await rig.say("C1", ALICE, f"<@{BOT}> broken \ud800 text")
        await rig.wait_reply(msg, "Got it.")
        took = time.monotonic() - start
        stored = await rig.engine.conversations.load(
            ConversationKey("slack", rig.fake.team_id, "C1", msg.ts))
        return ("a message with a lone UTF-16 surrogate", "the answer (U+FFFD in its place)",
                f"{took * 1000:.0f} ms", f"nothing ({len(stored)} turns stored)")


async def zero_width(server: PrivateRedis, llm: FakeLLM) -> Row:
    async with slack_rig(env_for(server), llm) as rig:
        before = len(llm.requests)
        start = time.monotonic()
        msg = await rig.say("C1", ALICE, f"<@{BOT}> \u200b\u200b\u200b")
        await rig.fake.wait_for(lambda: rig.fake.bot_replies("C1", msg.ts))
        took = time.monotonic() - start
        await rig.idle()
        calls = len(llm.requests) - before
        return ("a mention of only zero-width spaces", f"\"{rig.fake.seen_text('C1', msg.ts)}\"",
                f"{took * 1000:.0f} ms ({calls} model calls)", "nothing")


async def main(quick: bool, untrusted_only: bool, ten: bool) -> None:
    if untrusted_only:
        await untrusted_rows.run(ten)
        return
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    server = PrivateRedis()
    server.start()
    await server.ready()
    rows: list[Row] = []
    steps: list[Callable[[FakeLLM], Awaitable[Row]]] = [
        lambda llm: redis_down(server, llm),
        lambda llm: redis_dies_mid_answer(server, llm),
        lambda llm: bad_timestamp(server, llm, log),
        lambda llm: forged_bodies(server, llm, log),
        lambda llm: broadcast(server, llm),
        lambda llm: silent_model(server, llm, "5" if quick else None),
        lambda llm: surrogate(server, llm),
        lambda llm: zero_width(server, llm),
    ]
    try:
        for step in steps:
            async with FakeLLM() as llm:  # a fresh model each time: no failure left queued
                rows.append(await step(llm))
    finally:
        server.kill()
    header = ("fault", "what the user sees now", "time to it", "what was lost")
    print(table([dict(zip(header, row, strict=True)) for row in rows]))
    print()
    await untrusted_rows.run(ten)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--untrusted", action="store_true", help="only the hostile files and requests")
    parser.add_argument("--no-ten", action="store_true", help="without the ten bombs at once")
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.untrusted, not args.no_ten))
