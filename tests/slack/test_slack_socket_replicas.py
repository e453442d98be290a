"""Slack Socket Mode with several replicas (docs/operations.md, "What scales how").

Each replica opens its own Socket Mode connection. Slack sends every envelope to one
of an app's connections (the fake: in turn), so a replica sees only part of the
events, and the two events of one mention (`app_mention` and `message`) may reach two
replicas: the shared claim in Redis answers each message once.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest

from adapters.slack import SlackAdapter
from bot.app.runtime import open_engine
from bot.config import load_settings
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack import SOCKET_CONNECTIONS_PER_APP, FakeSlack
from tests.support.slack_fixtures import ALICE, BOB, slack_env

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def replica(fake: FakeSlack, base_env: dict[str, str], text: str) -> AsyncIterator[FakeLLM]:
    """One process: its own engine, Redis connection, model server and Socket Mode connection."""
    async with FakeLLM() as llm:
        llm.answer = Answer.of(text)
        env = slack_env(base_env | {"TOGETHER_BASE_URL": llm.url}, fake, "socket")
        settings = load_settings(env, dotenv=False)
        async with open_engine(settings) as engine:
            adapter = SlackAdapter(settings, engine)
            await adapter.start()
            try:
                yield llm
            finally:
                await engine.drain(5)
                await adapter.stop()


@pytest.mark.parametrize("replicas", [2, 3])
async def test_each_event_goes_to_one_replica_and_each_message_is_answered_once(
    base_env: dict[str, str], replicas: int
) -> None:
    async with FakeSlack() as fake, contextlib.AsyncExitStack() as stack:
        for user in (ALICE, BOB):
            fake.add_user(dataclasses.replace(user))
        models = [
            await stack.enter_async_context(replica(fake, base_env, f"Replica {k}.")) for k in range(replicas)
        ]
        await fake.wait_for(lambda: fake.connected == replicas)
        asked = []
        for i in range(9):
            message = fake.user_message(f"C{i}", ALICE.id, f"<@{fake.bot_user_id}> question {i}")
            for event in fake.events_for(message):  # app_mention, then message: two envelopes
                await fake.wait_ack(await fake.push_event(event))
            asked.append(message)

        finals = {f"Replica {k}." for k in range(replicas)}

        def answered() -> bool:
            return all(fake.seen_text(m.channel, m.ts) in finals for m in asked)

        await fake.wait_for(answered, 15)
        replies = [fake.seen_text(m.channel, m.ts) for m in asked]
        # Every envelope went to exactly one connection, and every connection got some.
        sent_on = Counter(fake.delivered_to[e["envelope_id"]] for e in fake.envelopes)
        assert len(sent_on) == replicas and sum(sent_on.values()) == len(fake.envelopes)
        # Each message once, by one replica, which asked its own model once.
        assert all(len(fake.bot_replies(m.channel, m.ts)) == 1 for m in asked)
        assert sum(len(llm.requests) for llm in models) == len(asked)
        by_model = Counter(f"Replica {k}." for k, llm in enumerate(models) for _ in llm.requests)
        assert Counter(replies) == by_model
        # Which replica answers is whichever got the message's first event: Slack's pick.


async def test_past_ten_connections_slack_says_too_many_websockets() -> None:
    async with FakeSlack() as fake, aiohttp.ClientSession() as session:
        url = f"ws://127.0.0.1:{fake.port}/link/?ticket=t"
        sockets = [await session.ws_connect(url) for _ in range(SOCKET_CONNECTIONS_PER_APP)]
        for ws in sockets:
            assert (await ws.receive_json())["type"] == "hello"
        extra = await session.ws_connect(url)
        refused = await extra.receive_json()
        assert (refused["type"], refused["reason"]) == ("disconnect", "too_many_websockets")
        assert fake.connected == SOCKET_CONNECTIONS_PER_APP
        for ws in [*sockets, extra]:
            await ws.close()
