"""Graceful shutdown: draining, answers in flight finishing or marked interrupted, exit 0.

In-process tests run `Service` with a stub adapter; the last ones run the real
`python -m bot run` against the fake Slack (Socket Mode) and send it SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as redis
from aiohttp import web

from bot.app.runtime import open_engine
from bot.app.service import Service
from bot.config import Settings, load_settings
from bot.contract import Adapter
from bot.engine import Engine
from bot.ops import metrics
from bot.ops.health import HEALTHZ, READYZ
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack import FakeSlack
from tests.support.core import turn
from tests.support.helpers import bot_process, free_port, until_ready, wait_until
from tests.support.slack_fixtures import ALICE, BOT, slack_env
from tests.support.surfaces import RecordingSurface

# The bot under test runs in a process of its own, on the wall clock (tests/support/clock.py).
pytestmark = pytest.mark.real_time

ROOT = Path(__file__).resolve().parents[2]
RESTARTING = "_(Interrupted: the bot is restarting; please ask again.)_"


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[metrics.Metrics]:
    yield metrics.reset()
    metrics.reset()



async def status(port: int, path: str) -> int:
    """The HTTP status of GET path, or 0 when nothing answers."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=2)) as resp,
        ):
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


class StubAdapter(Adapter):
    """A platform adapter reduced to what the service drives."""

    name = "stub"
    connected = False  # a plain attribute here, where the real adapters ask their connection

    def __init__(self) -> None:
        self.connected = False
        self.events: list[str] = []
        self.stopped_at: float | None = None

    async def start(self) -> None:
        self.connected = True
        self.events.append("start")

    async def stop_intake(self) -> None:
        self.events.append("stop_intake")

    async def stop(self) -> None:
        self.connected = False
        self.stopped_at = time.monotonic()
        self.events.append("stop")


@dataclasses.dataclass
class Running:
    service: Service
    engine: Engine
    adapter: StubAdapter
    stop: asyncio.Event
    task: asyncio.Task[int]

    @property
    def port(self) -> int:
        return self.service.health_port


@asynccontextmanager
async def running(env: dict[str, str], **settings: str) -> AsyncIterator[Running]:
    config: Settings = load_settings(env | settings, dotenv=False)
    async with open_engine(config) as engine:
        adapter = StubAdapter()
        service = Service(config, engine, [adapter], health_port=0)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await wait_until(lambda: adapter.connected and service.upkeep.inflight.active)
        try:
            yield Running(service, engine, adapter, stop, task)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


async def test_answers_in_flight_finish_within_the_grace(
    engine_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis, redis_prefix: str
) -> None:
    fake_llm.answer = Answer.words(60, tokens_per_second=30)
    async with running(engine_env, SHUTDOWN_GRACE_SECONDS="20") as run:
        assert await status(run.port, READYZ) == 200
        surface = RecordingSurface()
        run.engine.submit(turn("tell me", surface=surface))
        await wait_until(lambda: surface.messages)

        run.stop.set()
        await wait_until(lambda: not run.engine.accepting)
        assert await status(run.port, READYZ) == 503  # load balancers stop sending events
        assert await status(run.port, HEALTHZ) == 200  # but the process is alive
        # A new event is not claimed, and not marked seen: the restarted bot can take it.
        assert not await run.engine.claim("test", "late-event")
        assert not await redis_client.exists(f"{redis_prefix}:seen:test:late-event")

        assert await asyncio.wait_for(run.task, 30) == 0
        assert surface.text == fake_llm.answer.text  # finished, not cut
        assert run.adapter.events == ["start", "stop_intake", "stop"]
        assert run.adapter.stopped_at is not None and surface.writes[-1].at < run.adapter.stopped_at
        assert await status(run.port, HEALTHZ) == 0  # the health server is gone too


async def test_answers_past_the_grace_are_marked_and_their_locks_released(
    engine_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis, redis_prefix: str,
    fresh_metrics: metrics.Metrics,
) -> None:
    fake_llm.answer = Answer.words(400, tokens_per_second=20)  # 20 s
    async with running(engine_env, SHUTDOWN_GRACE_SECONDS="0.3") as run:
        owner = run.engine.inflight.owner
        surface = RecordingSurface()
        run.engine.submit(turn("tell me", surface=surface))
        await wait_until(lambda: "w3" in surface.text)
        # The upkeep has the answer on record while it streams.
        await wait_until(lambda: redis_client.hlen(f"{redis_prefix}:inflight:{owner}"))

        started = time.monotonic()
        run.stop.set()
        assert await asyncio.wait_for(run.task, 30) == 0
        assert time.monotonic() - started < 10

    assert surface.text.startswith("w1 w2 w3")
    assert surface.text.endswith(RESTARTING)
    assert not [k async for k in redis_client.scan_iter(f"{redis_prefix}:conv:*:lock")]
    # A clean exit leaves nothing for a later sweep: no record, no heartbeat, not an owner.
    assert not await redis_client.exists(f"{redis_prefix}:inflight:{owner}")
    assert not await redis_client.exists(f"{redis_prefix}:owner:{owner}")
    assert not await redis_client.sismember(f"{redis_prefix}:owners", owner)
    answers = fresh_metrics.registry.get_sample_value(
        "chatbot_answers_total", {"platform": "test", "outcome": "interrupted"}
    )
    assert answers == 1


async def test_a_second_signal_cuts_the_grace_short(engine_env: dict[str, str], fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.words(400, tokens_per_second=20)
    async with running(engine_env, SHUTDOWN_GRACE_SECONDS="60") as run:
        surface = RecordingSurface()
        run.engine.submit(turn("tell me", surface=surface))
        await wait_until(lambda: surface.messages)
        run.stop.set()
        await wait_until(lambda: not run.engine.accepting)
        run.service.hurry.set()
        assert await asyncio.wait_for(run.task, 10) == 0
    assert surface.text.endswith(RESTARTING)


class WebAppAdapter(StubAdapter):
    """Like the Slack adapter in HTTP mode: it serves an aiohttp app of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.web_app = web.Application()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.web_app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        if self._runner is not None:
            await self._runner.cleanup()


async def test_health_routes_share_the_adapters_web_server(engine_env: dict[str, str]) -> None:
    config = load_settings(engine_env, dotenv=False)
    async with open_engine(config) as engine:
        adapter = WebAppAdapter()
        unused = free_port()
        service = Service(config, engine, [adapter], health_port=unused)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await wait_until(lambda: adapter.connected)
        assert await status(adapter.port, HEALTHZ) == 200
        assert await status(adapter.port, READYZ) == 200
        assert await status(unused, HEALTHZ) == 0  # no second server
        adapter.connected = False  # readiness follows the platform connection
        assert await status(adapter.port, READYZ) == 503
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0


# ---- the real process -----------------------------------------------------------------


def bot_run(env: dict[str, str]) -> AbstractAsyncContextManager[asyncio.subprocess.Process]:
    return bot_process("-m", "bot", "run", env=env)


async def mention_and_sigterm(
    engine_env: dict[str, str], fake_llm: FakeLLM, grace: str
) -> tuple[int, str, str]:
    """Start `python -m bot run`, mention the bot, SIGTERM it mid-answer; returns
    (exit code, what the thread shows, stderr)."""
    async with FakeSlack() as slack:
        slack.add_user(dataclasses.replace(ALICE))
        port = free_port()
        env = slack_env(engine_env, slack, "socket") | {
            "HEALTH_PORT": str(port), "SHUTDOWN_GRACE_SECONDS": grace,
        }
        async with bot_run(env) as process:

            async def ready() -> bool:
                return await status(port, READYZ) == 200

            await until_ready(process, ready)
            message = slack.user_message("C1", ALICE.id, f"<@{BOT}> tell me a story")
            for event in slack.events_for(message):
                await slack.wait_ack(await slack.push_event(event))
            await slack.wait_for(lambda: "w2" in slack.seen_text("C1", message.ts), 20)

            process.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode is not None
            return process.returncode, slack.seen_text("C1", message.ts), err.decode()


async def test_sigterm_lets_the_answer_finish_then_exits_0(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(40, tokens_per_second=20)  # 2 s
    code, shown, err = await mention_and_sigterm(engine_env, fake_llm, grace="30")
    assert code == 0, err
    assert shown == fake_llm.answer.text
    assert "Traceback" not in err and "stopped" in err


async def test_sigterm_past_the_grace_marks_the_answer_and_exits_0(
    engine_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis, redis_prefix: str
) -> None:
    fake_llm.answer = Answer.words(600, tokens_per_second=20)  # 30 s
    code, shown, err = await mention_and_sigterm(engine_env, fake_llm, grace="0.5")
    assert code == 0, err
    assert shown.startswith("w1 w2")
    assert "Interrupted: the bot is restarting" in shown
    assert "cut short by the shutdown" in err
    assert not [k async for k in redis_client.scan_iter(f"{redis_prefix}:conv:*:lock")]


async def test_run_exits_2_when_a_platform_refuses_its_token(engine_env: dict[str, str]) -> None:
    async with FakeSlack() as slack:
        port = free_port()
        env = slack_env(engine_env, slack, "socket") | {
            "HEALTH_PORT": str(port), "SLACK_BOT_TOKEN": "xoxb-" + "test-wrong",
        }
        async with bot_run(env) as process:
            _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2  # a setting to fix (docs/operations.md "When it cannot start")
    assert "Slack refused SLACK_BOT_TOKEN" in err.decode().splitlines()[-1]
    assert "xoxb-" + "test-wrong" not in err.decode()
