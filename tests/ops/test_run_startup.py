"""`python -m bot run` that cannot start: one line naming the setting and the fix, and the exit
status docs/operations.md gives (2: a setting to fix, 1: something outside failed), per platform."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.fakes.discord import FakeDiscord
from tests.fakes.llm import FakeLLM
from tests.fakes.slack import FakeSlack
from tests.support.cli import run_cli
from tests.support.helpers import free_port
from tests.support.slack_fixtures import slack_env

# The bot under test runs in this process (`run_cli`: no signal handlers off the main thread, so
# only a `run` that fails to start ends) with its own engine on the wall clock, so the fakes are
# on it too (tests/support/clock.py). `run` as a real process: tests/ops/test_ops_shutdown.py and others.
pytestmark = pytest.mark.real_time

CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1


@contextmanager
def taken_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        yield held.getsockname()[1]



async def fails(env: dict[str, str], code: int, *needles: str) -> str:
    """Run `run`; it must exit with `code`, its last stderr line holding every needle, and no traceback."""
    status, _, err = await run_cli(["run"], env | {"HEALTH_PORT": env.get("HEALTH_PORT", str(free_port()))})
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == code, err
    assert lines, "nothing said"
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[-1], err
    return lines[-1]


@pytest.fixture
async def fake_slack() -> FakeSlack:
    async with FakeSlack() as fake:
        yield fake  # type: ignore[misc]


async def test_slack_refused_tokens_name_the_setting(
    engine_env: dict[str, str], fake_slack: FakeSlack
) -> None:
    env = slack_env(engine_env, fake_slack, "socket")
    line = await fails(env | {"SLACK_BOT_TOKEN": "xoxb-test-wrong"}, 2,
                       "Slack refused SLACK_BOT_TOKEN (invalid_auth)", "OAuth & Permissions")
    assert "wrong" not in line  # never the token itself
    await fails(env | {"SLACK_APP_TOKEN": "xapp-test-wrong"}, 2,
                "Slack refused SLACK_APP_TOKEN", "connections:write")


async def test_slack_token_in_the_wrong_variable_is_caught_before_connecting(
    engine_env: dict[str, str], fake_slack: FakeSlack
) -> None:
    env = slack_env(engine_env, fake_slack, "socket")
    await fails(env | {"SLACK_BOT_TOKEN": fake_slack.app_token}, 2,
                "SLACK_BOT_TOKEN is an app-level token (xapp-…), not a bot token")
    assert not fake_slack.calls_to("auth.test")


async def test_slack_unreachable_and_ports_in_use(engine_env: dict[str, str], fake_slack: FakeSlack) -> None:
    env = slack_env(engine_env, fake_slack, "socket")
    await fails(env | {"SLACK_API_URL": f"{CLOSED}/api/"}, 1, f"cannot reach Slack at {CLOSED}/api/",
                "SLACK_API_URL")
    with taken_port() as port:
        await fails(env | {"HEALTH_PORT": str(port)}, 1, f"HEALTH_PORT={port} is already in use")
        http = slack_env(engine_env, fake_slack, "http")
        await fails(http | {"SLACK_PORT": str(port)}, 1, f"SLACK_PORT={port} is already in use")


async def test_discord_refused_token_and_unreachable(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    async with FakeDiscord() as fake:
        env = engine_env | {"DISCORD_API_URL": fake.api_url, "DISCORD_GATEWAY_URL": fake.gateway_url}
        line = await fails(env | {"DISCORD_BOT_TOKEN": "not-the-token"}, 2,
                           "Discord refused DISCORD_BOT_TOKEN")
        assert "not-the-token" not in line
        await fails(env | {"DISCORD_BOT_TOKEN": fake.token, "DISCORD_API_URL": f"{CLOSED}/api/v10"}, 1,
                    f"cannot reach Discord at {CLOSED}/api/v10", "DISCORD_API_URL")
        with taken_port() as port:
            await fails(env | {"DISCORD_BOT_TOKEN": fake.token, "HEALTH_PORT": str(port)}, 1,
                        f"HEALTH_PORT={port} is already in use")
