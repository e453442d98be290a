"""/healthz, /readyz and /metrics over real HTTP, with a private Redis that stops and returns."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis
from aiohttp import web

from bot.ops import metrics
from bot.ops.health import (
    HEALTHZ,
    METRICS,
    READYZ,
    Health,
    connected_check,
    probe,
    redis_check,
    serving_port,
)
from tests.support.helpers import free_port, wait_until
from tests.support.private_redis import PrivateRedis

# The bot under test runs in a process of its own, on the wall clock (tests/support/clock.py).
pytestmark = pytest.mark.real_time

ROOT = Path(__file__).resolve().parents[2]



@dataclass
class Reply:
    status: int
    body: Any
    content_type: str


async def get(port: int, path: str) -> Reply:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        text = await resp.text()
        body = await resp.json() if resp.content_type == "application/json" else text
        return Reply(resp.status, body, resp.headers["Content-Type"])


@pytest.fixture
async def health() -> AsyncIterator[Health]:
    h = Health(check_timeout=0.3)
    yield h
    await h.stop()


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[None]:
    metrics.reset()
    yield
    metrics.reset()


class Adapter:
    """Stands in for a platform adapter: only `connected` matters to readiness."""

    def __init__(self) -> None:
        self.connected = False


async def test_healthz_answers_while_the_loop_runs(health: Health) -> None:
    port = await health.start(0)
    reply = await get(port, HEALTHZ)
    assert reply.status == 200
    assert reply.body["status"] == "ok"
    assert reply.body["uptime_s"] >= 0


async def test_readyz_names_every_failed_check(health: Health) -> None:
    async def ok() -> bool:
        return True

    async def broken() -> bool:
        raise ConnectionError("refused with token xoxb-test-123")

    async def hangs() -> bool:
        await asyncio.sleep(30)
        return True

    health.add_check("good", ok)
    health.add_check("broken", broken)
    health.add_check("hangs", hangs)
    port = await health.start(0)

    reply = await get(port, READYZ)
    assert reply.status == 503
    assert reply.body["ready"] is False
    assert sorted(reply.body["failed"]) == ["broken", "hangs"]
    assert reply.body["checks"]["good"] == "ok"
    assert reply.body["checks"]["broken"].startswith("ConnectionError: refused")
    assert "xoxb-test" not in reply.body["checks"]["broken"]  # reasons are redacted
    assert reply.body["checks"]["hangs"] == "no answer within 0.3s"


async def test_readyz_follows_the_platform_connection(health: Health) -> None:
    slack = Adapter()
    health.add_check("slack", connected_check(slack))
    port = await health.start(0)

    reply = await get(port, READYZ)
    assert (reply.status, reply.body["failed"]) == (503, ["slack"])
    assert reply.body["checks"]["slack"] == "not connected"

    slack.connected = True
    reply = await get(port, READYZ)
    assert reply.status == 200
    assert reply.body == {"ready": True, "checks": {"slack": "ok"}}


async def test_draining_makes_readyz_fail_but_not_healthz(health: Health) -> None:
    port = await health.start(0)
    assert (await get(port, READYZ)).status == 200

    health.set_draining()
    reply = await get(port, READYZ)
    assert reply.status == 503
    assert reply.body["draining"] is True
    assert reply.body["failed"] == ["draining"]
    assert (await get(port, HEALTHZ)).status == 200


async def test_metrics_served_in_prometheus_format(health: Health) -> None:
    port = await health.start(0)
    metrics.answer_finished("discord", "ok", tokens_in=10, tokens_out=5, ttft_s=0.2, total_s=1.0)
    metrics.platform_write("discord", "edit_message", 429)

    reply = await get(port, METRICS)
    assert reply.status == 200
    assert reply.content_type.startswith("text/plain; version=0.0.4")
    assert 'chatbot_answers_total{outcome="ok",platform="discord"} 1.0' in reply.body
    assert 'chatbot_tokens_total{direction="out",platform="discord"} 5.0' in reply.body
    assert (
        'chatbot_platform_writes_total{method="edit_message",platform="discord",status="429"} 1.0'
        in reply.body
    )
    assert "# TYPE chatbot_time_to_first_token_seconds histogram" in reply.body


async def test_mounts_on_an_existing_app_sharing_its_port(health: Health) -> None:
    async def slack_events(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/slack/events", slack_events)
    health.mount(app)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        assert (await get(port, HEALTHZ)).status == 200
        assert (await get(port, READYZ)).status == 200
        assert "chatbot_answers_total" in (await get(port, METRICS)).body
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{port}/slack/events", json={}) as resp,
        ):
            assert resp.status == 200
    finally:
        await runner.cleanup()


async def test_probe_is_true_only_for_a_200(health: Health) -> None:
    port = await health.start(0)
    health.add_check("down", connected_check(Adapter()))
    assert await asyncio.to_thread(probe, port, HEALTHZ)
    assert not await asyncio.to_thread(probe, port, READYZ)
    assert not await asyncio.to_thread(probe, free_port(), HEALTHZ)


def test_serving_port_is_the_slack_port_only_in_slack_http_mode() -> None:
    config = pytest.importorskip("bot.config")
    base = {"TOGETHER_API_KEY": "test-key", "HEALTH_PORT": "9100", "SLACK_PORT": "3100"}

    http = config.load_settings(
        {**base, "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "test-secret"},
        dotenv=False,
    )
    socket_mode = config.load_settings(
        {**base, "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_APP_TOKEN": "xapp-test"}, dotenv=False
    )
    discord_only = config.load_settings({**base, "DISCORD_BOT_TOKEN": "discord-test-token"}, dotenv=False)
    assert serving_port(http) == 3100
    assert serving_port(socket_mode) == 9100
    assert serving_port(discord_only) == 9100


# ---- readiness against a real Redis that goes away and comes back --------------------


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.kill()


async def test_readiness_flips_when_redis_stops_and_returns(
    health: Health, private_redis: PrivateRedis
) -> None:
    client = redis.Redis(
        host="127.0.0.1", port=private_redis.port, socket_timeout=1, socket_connect_timeout=1
    )
    health.add_check("redis", redis_check(client))
    health.add_check("slack", connected_check(_connected()))
    port = await health.start(0)

    async def ready() -> bool:
        return (await get(port, READYZ)).status == 200

    async def not_ready() -> bool:
        return (await get(port, READYZ)).status == 503

    try:
        await wait_until(ready, timeout=10)

        private_redis.kill()
        await wait_until(not_ready, timeout=10)
        reply = await get(port, READYZ)
        assert reply.body["failed"] == ["redis"]
        assert reply.body["checks"]["slack"] == "ok"

        private_redis.start()
        await wait_until(ready, timeout=10)
        assert (await get(port, READYZ)).body["checks"] == {"redis": "ok", "slack": "ok"}
    finally:
        await client.aclose()


def _connected() -> Adapter:
    adapter = Adapter()
    adapter.connected = True
    return adapter


async def test_the_container_health_check_command(health: Health, tmp_path: Path) -> None:
    """`python -m bot.ops.health` (the image's HEALTHCHECK) finds the port from the settings."""
    port = await health.start(0)

    async def run(env_port: int) -> int:
        env = {**os.environ, "HEALTH_PORT": str(env_port), "TOGETHER_API_KEY": "test-key"}
        for name in ("SLACK_BOT_TOKEN", "SLACK_MODE", "SLACK_PORT"):
            env.pop(name, None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.ops.health",
            cwd=tmp_path,  # no .env there
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return await asyncio.wait_for(proc.wait(), 30)

    assert await run(port) == 0
    assert await run(free_port()) == 1
