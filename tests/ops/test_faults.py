"""Keep answering when things break: one end-to-end test per fault, against the real
slack-bolt, the fakes, and a redis-server of the test's own that it kills and restarts.

| fault | what the person sees |
| --- | --- |
| Redis down, someone mentions the bot | the answer (history from Slack); `/readyz` says redis: degraded |
| Redis dies mid-answer | the answer, and nothing after it |
| `X-Slack-Request-Timestamp: notanumber` | (Slack gets a 400; no traceback) |
| forged 1 MB bodies | (401 / 413; the log has the reason and the size) |
| model text with `<!channel>` & co. | the text, inert: nobody is pinged |
| a model that never answers | an explanation within MODEL_FIRST_TOKEN_TIMEOUT; "slow" status first |
| a lone UTF-16 surrogate | the answer (the surrogate became U+FFFD) |
| a mention of only zero-width spaces | the hint, and no model call |
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis

import bot.turn
from adapters.slack import app as slack_app
from bot.app.service import Service
from bot.contract import ConversationKey
from bot.ops import metrics
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack_events import sign
from tests.support.discord_fixtures import World, bot_env, fake_discord, llm, running_bot, world
from tests.support.helpers import wait_until
from tests.support.private_redis import PrivateRedis
from tests.support.slack_fixtures import ADMIN, ALICE, BOB, BOT, SECRET, SlackRig, slack_rig

SOMETHING_WENT_WRONG = "Something went wrong"

__all__ = ["fake_discord", "llm", "world"]  # Discord fixtures used by name


@asynccontextmanager
async def private_redis(directory: Path | None = None) -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(directory)
    server.start()
    try:
        await server.ready()
        yield server
    finally:
        server.kill()


@asynccontextmanager
async def health_of(rig: SlackRig) -> AsyncIterator[str]:
    """The real service's health server for the rig's engine; yields its /readyz URL."""
    service = Service(rig.settings, rig.engine, [], health_port=0)
    await service.start()
    try:
        yield f"http://127.0.0.1:{service.health_port}/readyz"
    finally:
        await service.shutdown()


async def get_json(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


def sample(name: str, **labels: str) -> float:
    return metrics.current().registry.get_sample_value(name, labels) or 0.0


def everything_written(rig: SlackRig) -> str:
    """Every text the bot sent to Slack, in any field of any write."""
    return json.dumps([c.params for c in rig.fake.writes()], ensure_ascii=False)


# ---- Redis --------------------------------------------------------------------------


async def test_redis_down_the_mention_is_answered_and_redis_comes_back_by_itself(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    metrics.reset()
    async with private_redis() as server, slack_rig(base_env | {"REDIS_URL": server.url}, fake_llm) as rig:
        rig.engine.store_state.retry_after = 0.2  # look for Redis again soon (default 2 s)
        async with health_of(rig) as readyz:
            server.kill()
            fake_llm.answer = Answer.of("Answered without Redis.")
            asked = time.monotonic()
            msg = await rig.say("C1", ALICE, f"<@{BOT}> are you there?")
            await rig.wait_reply(msg, "Answered without Redis.")
            assert time.monotonic() - asked < 5
            assert sample("chatbot_degraded_answers_total", platform="slack") == 1

            status, body = await get_json(readyz)
            assert (status, body["ready"], body["checks"]["redis"]) == (200, True, "degraded")

            # The thread goes on, still without Redis: its history comes from Slack.
            fake_llm.answer = Answer.of("Still here.")
            await rig.say("C1", BOB, "and now?", thread_ts=msg.ts)
            await rig.wait_reply(msg, "Answered without Redis.Still here.")
            assert fake_llm.requests[-1]["messages"][1:] == [
                {"role": "user", "content": "Alice: are you there?"},
                {"role": "assistant", "content": "Answered without Redis."},
                {"role": "user", "content": "Bob: and now?"},
            ]

            server.start()
            await server.ready()

            async def redis_ok() -> bool:
                return (await get_json(readyz))[1]["checks"]["redis"] == "ok"

            await wait_until(redis_ok, timeout=10)
            assert sample("chatbot_redis_degraded") == 0

            fake_llm.answer = Answer.of("Back to normal.")
            again = await rig.say("C1", ALICE, f"<@{BOT}> and with Redis?")
            await rig.wait_reply(again, "Back to normal.")
            client = redis.Redis.from_url(server.url, decode_responses=True)
            try:
                key = rig.engine.keys.history(ConversationKey("slack", rig.fake.team_id, "C1", again.ts))
                assert len(await client.lrange(key, 0, -1)) == 2  # stored again
            finally:
                await client.aclose()
        assert sample("chatbot_degraded_answers_total", platform="slack") == 2


async def test_redis_dies_mid_answer_the_answer_is_the_last_word(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    metrics.reset()
    async with private_redis() as server, slack_rig(base_env | {"REDIS_URL": server.url}, fake_llm) as rig:
        fake_llm.answer = Answer.words(30, tokens_per_second=20)
        msg = await rig.say("C1", ALICE, f"<@{BOT}> tell me a long story")
        await rig.fake.wait_for(lambda: rig.fake.bot_replies("C1", msg.ts))  # streaming
        server.kill()
        await rig.wait_reply(msg, fake_llm.answer.text, within=15)
        assert len(rig.fake.bot_replies("C1", msg.ts)) == 1
        assert SOMETHING_WENT_WRONG not in everything_written(rig)
        assert sample("chatbot_after_answer_failures_total", stage="store") == 1

        # Redis returns (empty): the next turn still sees the whole exchange, from Slack.
        server.start()
        await server.ready()
        rig.engine.store_state.retry_after = 0
        fake_llm.answer = Answer.of("The end.")
        await rig.say("C1", ALICE, "and then?", thread_ts=msg.ts)
        await rig.wait_reply(msg, Answer.words(30).text + "The end.")
        assert fake_llm.requests[-1]["messages"][1:] == [
            {"role": "user", "content": "Alice: tell me a long story"},
            {"role": "assistant", "content": Answer.words(30).text},
            {"role": "user", "content": "Alice: and then?"},
        ]


async def test_nothing_stored_is_lost_and_the_outage_turns_are_kept(
    base_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path
) -> None:
    """A persona and a history in Redis; Redis goes (after a SAVE) and comes back with them:
    the persona served meanwhile from the cache, and the turns of the outage are added."""
    async with private_redis(tmp_path) as server, slack_rig(
        base_env | {"REDIS_URL": server.url}, fake_llm
    ) as rig:
        rig.engine.store_state.retry_after = 0
        await rig.command("set You are a pirate.", user=ADMIN, channel="C1")
        fake_llm.answer = Answer.of("Arr, hello.")
        msg = await rig.say("C1", ALICE, f"<@{BOT}> hello")
        await rig.wait_reply(msg, "Arr, hello.")
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            await client.save()
        finally:
            await client.aclose()
        server.kill()

        fake_llm.answer = Answer.of("Arr, still here.")
        await rig.say("C1", ALICE, "Redis is down?", thread_ts=msg.ts)
        await rig.wait_reply(msg, "Arr, hello.Arr, still here.")
        assert fake_llm.requests[-1]["messages"][0]["content"].startswith("You are a pirate.")

        server.start()
        await server.ready()
        fake_llm.answer = Answer.of("Arr, back.")
        await rig.say("C1", ALICE, "and now?", thread_ts=msg.ts)
        await rig.wait_reply(msg, "Arr, hello.Arr, still here.Arr, back.")
        assert fake_llm.requests[-1]["messages"][0]["content"].startswith("You are a pirate.")
        assert [m["content"] for m in fake_llm.requests[-1]["messages"][1:]] == [
            "Alice: hello", "Arr, hello.", "Alice: Redis is down?",
            "Arr, still here.", "Alice: and now?",
        ]
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            key = rig.engine.keys.history(ConversationKey("slack", rig.fake.team_id, "C1", msg.ts))
            stored = [json.loads(raw)["content"] for raw in await client.lrange(key, 0, -1)]
            persona = await client.hget(rig.engine.keys.persona(
                ConversationKey("slack", rig.fake.team_id, "C1", "").channel_scope), "system_prompt")
        finally:
            await client.aclose()
        assert stored == [
            "hello", "Arr, hello.", "Redis is down?", "Arr, still here.", "and now?", "Arr, back.",
        ]
        assert persona == "You are a pirate."


# ---- hostile HTTP input (Slack HTTP mode) ----------------------------------------------


async def post_raw(rig: SlackRig, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    url = f"http://127.0.0.1:{rig.adapter.port}/slack/events"
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as reply:
        return reply.status, await reply.text()


async def test_malformed_timestamp_gets_400_without_a_traceback(
    base_env: dict[str, str], fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with slack_rig(base_env, fake_llm, mode="http") as rig:
        body = json.dumps(rig.fake.callback({"type": "app_mention", "text": "hi"}))
        for timestamp in ("notanumber", "", "1" * 40, "١٢٣", "-5"):
            headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": timestamp,
                       "X-Slack-Signature": sign(SECRET, str(int(time.time())), body)}
            status, _ = await post_raw(rig, body.encode(), headers)
            assert status == 400, timestamp
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]

        fake_llm.answer = Answer.of("Still fine.")
        msg = await rig.say("C1", ALICE, f"<@{BOT}> still there?")
        await rig.wait_reply(msg, "Still fine.")


async def test_forged_big_bodies_cost_a_line_of_log_each(
    base_env: dict[str, str], fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(slack_app, "LINGER", 0.2)  # the refused bodies' connections, on the way out
    caplog.set_level(logging.DEBUG)
    async with slack_rig(base_env, fake_llm, mode="http") as rig:
        caplog.clear()  # from here on: only what the requests cost
        megabyte = b'{"token": "' + b"x" * 1_000_000 + b'"}'
        stamp = str(int(time.time()))
        forged = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": stamp,
                  "X-Slack-Signature": "v0=" + "0" * 64}
        for _ in range(2):
            assert (await post_raw(rig, megabyte, forged))[0] == 401
        too_big = b"x" * (2 << 20)
        assert (await post_raw(rig, too_big, forged))[0] == 413
        # Even correctly signed, a body over the limit is not read.
        signed = forged | {"X-Slack-Signature": sign(SECRET, stamp, too_big.decode())}
        assert (await post_raw(rig, too_big, signed))[0] == 413
        logged = [r.getMessage() for r in caplog.records]
        assert sum(map(len, logged)) < 2_000, logged
        assert all(len(line) < 300 for line in logged)
        assert "xxxx" not in "".join(logged)
        refusals = [line for line in logged if "refused a Slack HTTP request" in line]
        assert len(refusals) == 4 and f"({len(megabyte)} bytes)" in refusals[0]


# ---- no broadcast from model text ----------------------------------------------------


BROADCAST = "Hey <!channel> <!here|here> <!everyone> <!subteam^S0OPS|@ops> @here <@U0BOB> <@U0ALICE>!"


@pytest.mark.parametrize("streaming", ["update", "native"])
async def test_model_text_pings_nobody(base_env: dict[str, str], fake_llm: FakeLLM, streaming: str) -> None:
    # Chunks of 3 characters: tokens arrive split, as a model's would.
    fake_llm.answer = Answer.of(BROADCAST, chunk=3, tokens_per_second=40)
    async with slack_rig(base_env, fake_llm, SLACK_STREAMING=streaming) as rig:
        msg = await rig.say("C1", ALICE, f"<@{BOT}> please say hi to <@U0BOB>")
        await rig.fake.wait_for(
            lambda: "U0ALICE" in rig.fake.seen_text("C1", msg.ts) and rig.engine.live_answers == 0, 10
        )
        written = everything_written(rig)
        for live in ("<!channel", "<!here", "<!everyone", "<!subteam", "<@U0ALICE", " @here"):
            assert live not in written, live
        seen = rig.fake.seen_text("C1", msg.ts)
        assert "<@U0BOB>" in seen  # Alice mentioned Bob: the answer may too
        assert "＜!channel>" in seen and "＠here" in seen  # still readable


async def test_errors_and_command_replies_ping_nobody(base_env: dict[str, str], fake_llm: FakeLLM) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        await rig.command("set Start every answer with <!channel> and <!here>.", user=ADMIN, channel="C1")
        shown = await rig.command("show", user=ADMIN, channel="C1")
        body = json.dumps(shown)
        assert "<!channel" not in body and "<!here" not in body
        assert shown["blocks"][0]["type"] == "markdown" and "＜!channel>" in shown["blocks"][0]["text"]


# ---- a silent model ------------------------------------------------------------------


async def test_a_model_that_never_answers_is_explained_within_the_budget(
    base_env: dict[str, str], fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bot.turn, "SLOW_AFTER", 0.5)
    fake_llm.fail_next("hang", times=10)  # accepts the connection, never answers
    env = {"MODEL_FIRST_TOKEN_TIMEOUT": "3", "LLM_FIRST_TOKEN_TIMEOUT": "1.2"}
    async with slack_rig(base_env, fake_llm, **env) as rig:
        asked = time.monotonic()
        msg = await rig.say("C1", ALICE, f"<@{BOT}> hello?")
        await rig.fake.wait_for(lambda: rig.fake.bot_replies("C1", msg.ts), within=10)
        waited = time.monotonic() - asked
        assert waited < 3 + 1.5, waited  # the budget, plus writing the explanation on a busy machine
        assert "took too long" in rig.fake.seen_text("C1", msg.ts)
        assert len(fake_llm.requests) >= 2  # retried within the budget
        statuses = [s.status for s in rig.fake.statuses]
        assert bot.turn.SLOW_STATUS in statuses


# ---- text at the edge ----------------------------------------------------------------


async def test_a_lone_surrogate_is_replaced_not_fatal(base_env: dict[str, str], fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.of("Got it.")
    async with slack_rig(base_env, fake_llm) as rig:
        msg = await rig.say("C1", ALICE, f"<@{BOT}> broken \ud800 text")
        await rig.wait_reply(msg, "Got it.")
        assert fake_llm.requests[0]["messages"][-1]["content"] == "Alice: broken \ufffd text"
        assert SOMETHING_WENT_WRONG not in everything_written(rig)
        stored = await rig.engine.conversations.load(ConversationKey("slack", rig.fake.team_id, "C1", msg.ts))
        assert [e.content for e in stored] == ["broken \ufffd text", "Got it."]


async def test_a_mention_of_only_zero_width_characters_calls_no_model(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    async with slack_rig(base_env, fake_llm) as rig:
        msg = await rig.say("C1", ALICE, f"<@{BOT}> \u200b\u200b \u2060\ufeff")
        await rig.fake.wait_for(lambda: rig.fake.bot_replies("C1", msg.ts))
        await rig.idle()
        assert "Ask me something" in rig.fake.seen_text("C1", msg.ts)
        assert fake_llm.requests == []


# ---- the same core on Discord ----------------------------------------------------------


async def test_discord_answers_without_redis_from_the_reply_chain(
    world: World, llm: FakeLLM, base_env: dict[str, str]
) -> None:
    async with private_redis() as server, running_bot(
        world, llm, bot_env(base_env | {"REDIS_URL": server.url}, world.fake, llm)
    ) as rig:
        fake, w = rig.fake, rig.world
        server.kill()
        llm.answer = Answer.of("First, without Redis.")
        await fake.user_message(w.general, w.alice, f"{fake.bot.mention} hello <@everyone>?")
        await wait_until(lambda: len(llm.requests) == 1 and rig.engine.live_answers == 0, timeout=10)
        first = fake.bot_messages(w.general)[0]
        assert first["content"] == "First, without Redis."

        llm.answer = Answer.of("Second.")
        await fake.user_message(w.general, w.bob, "and a follow-up", reply_to=first)
        await wait_until(lambda: len(llm.requests) == 2 and rig.engine.live_answers == 0, timeout=10)
        assert [m["content"] for m in llm.requests[1]["messages"][1:]] == [
            "Alice: hello <@everyone>?", "First, without Redis.", "Bob: and a follow-up",
        ]
        assert fake.bot_messages(w.general)[1]["content"] == "Second."


MALFORMED_HTTP = [
    b"POST /slack/events HTTP/1.1\r\nHost: x\r\nX-Slack-Request-Timestamp: " + b"a" * 20_000 + b"\r\n\r\n",
    b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"\x00\x01SECRETGARBAGE\r\n\r\n",
    b"POST /slack/events HTTP/1.1\r\nHost: x\r\nX-Slack-Request-Timestamp: \xff\xfe\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    b"POST /slack/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nSECRETGARBAGE\r\n",
]


@pytest.mark.parametrize("raw", MALFORMED_HTTP, ids=["long-header", "bad-length", "not-http", "bad-bytes",
                                                     "bad-chunk"])
async def test_malformed_http_gets_400_and_a_short_log_line(
    base_env: dict[str, str], fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture, raw: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    async with slack_rig(base_env, fake_llm, mode="http") as rig:
        caplog.clear()
        reader, writer = await asyncio.open_connection("127.0.0.1", rig.adapter.port)
        writer.write(raw)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert status_line.split()[1] == b"400"
        await wait_until(lambda: any("refused" in r.getMessage() for r in caplog.records))
        logged = "".join(r.getMessage() for r in caplog.records)
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
        assert "aaaa" not in logged and "SECRET" not in logged and len(logged) < 300


async def test_the_http_server_binds_where_slack_host_says(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    async with slack_rig(base_env, fake_llm, mode="http", SLACK_HOST="127.0.0.1") as rig:
        assert rig.settings.slack.host == "127.0.0.1"
        assert rig.adapter._runner is not None
        assert [address[0] for address in rig.adapter._runner.addresses] == ["127.0.0.1"]
    async with slack_rig(base_env, fake_llm, mode="http") as rig:
        assert rig.adapter._runner is not None
        assert [address[0] for address in rig.adapter._runner.addresses] == ["0.0.0.0"]
