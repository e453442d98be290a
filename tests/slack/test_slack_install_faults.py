"""Installs are atomic from the installer's view: storing the installation is retried, and when it
still fails the installer gets a page saying the install did not complete (no 500, no traceback);
that workspace's events are then logged once an hour, not once each. End to end: the real
slack-bolt OAuth flow against the fake Slack, Redis (a private one, killed, for Redis down)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.contract import InstallRecords
from bot.state.keys import Keys
from tests.fakes.llm import FakeLLM
from tests.fakes.slack_state import User
from tests.support.private_redis import PrivateRedis
from tests.support.slack_fixtures import ALICE
from tests.support.slack_oauth_fixtures import ACME, OAuthRig, oauth_rig


class FailingPuts:
    """The installations' records, whose first `failures` writes fail as a Redis gone away would."""

    def __init__(self, records: InstallRecords, failures: int) -> None:
        self.records = records
        self.failures = failures
        self.tries = 0

    async def put(self, name: str, plain: str) -> None:
        self.tries += 1
        if self.tries <= self.failures:
            raise RedisConnectionError("Connection closed by server.")
        await self.records.put(name, plain)

    def __getattr__(self, name: str) -> object:
        return getattr(self.records, name)


def failing(rig: OAuthRig, failures: int) -> FailingPuts:
    multi = rig.adapter.multi
    assert multi is not None
    records = FailingPuts(multi.store.records, failures)
    multi.store.records = records  # type: ignore[assignment]
    return records


async def approve(rig: OAuthRig) -> tuple[str, str]:
    """The installer's consent on Slack: the redirect back to the app, and its state cookie."""
    rig.fake.add_user(User(ACME.bot_user_id, "chatbot", is_bot=True, team_id=ACME.key))
    link, cookie = await rig.install_link()
    return rig.fake.oauth.approve(link, ACME), cookie


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    with_traceback = [r.getMessage() for r in caplog.records if r.exc_info]
    assert not with_traceback, with_traceback
    assert "Traceback" not in caplog.text


async def test_a_store_that_fails_twice_is_retried_and_the_install_completes(
    base_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis
) -> None:
    async with oauth_rig(base_env, fake_llm) as rig:
        records = failing(rig, 2)
        await rig.install(ACME)  # asserts the success page (200)
        assert records.tries == 3
        keys = Keys(rig.settings.redis_prefix)
        assert await redis_client.exists(keys.installation("slack", "-:T0ACME")) == 1


async def test_a_store_that_keeps_failing_shows_a_try_again_page_and_events_are_logged_once(
    base_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with oauth_rig(base_env, fake_llm) as rig:
        records = failing(rig, 1_000)
        redirect, cookie = await approve(rig)
        done = await rig.redirect(redirect, cookie)
        assert done.status == 503
        assert "The install did not complete" in done.body and "Please try again" in done.body
        assert 'href="/slack/install"' in done.body
        assert records.tries == 3
        keys = Keys(rig.settings.redis_prefix)
        assert await redis_client.exists(keys.installation("slack", "-:T0ACME")) == 0

        asked = len(fake_llm.requests)
        for n in range(5):
            await rig.mention(ACME, "C1", ALICE.id, f"hello {n}")  # acknowledged (200), ignored
        await rig.fake.wait_for(lambda: rig.engine.live_answers == 0)
        assert len(fake_llm.requests) == asked
    lines = [r.getMessage() for r in caplog.records if "has no installation" in r.getMessage()]
    assert lines == [
        "events from Slack workspace -:T0ACME are ignored: it has no installation (uninstalled, or its "
        "install did not complete); logged once an hour"
    ]
    assert "AuthorizeResult (returned value from authorize) for it was not found" not in caplog.text
    no_tracebacks(caplog)


async def test_with_redis_down_the_install_page_and_the_redirect_say_to_try_again(
    base_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    await server.ready()
    try:
        async with oauth_rig(base_env | {"REDIS_URL": server.url}, fake_llm) as rig:
            redirect, cookie = await approve(rig)
            caplog.set_level(logging.INFO)
            server.kill()
            async with rig.http.get(f"{rig.base}/slack/install") as page:
                assert page.status == 503
                assert "The install could not start" in await page.text()
            done = await rig.redirect(redirect, cookie)
            assert done.status == 503 and "The install did not complete" in done.body
            no_tracebacks(caplog)
            server.start()
            await server.ready()
    finally:
        server.kill()
