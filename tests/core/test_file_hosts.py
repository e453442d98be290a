"""Tokens go only to their platform: a file link naming another host is not fetched (and is
logged), and a redirect to another host is followed without the token. End to end: the real
slack-bolt and discord.py against the fakes, and a stranger's server that records what it got."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bot.files.origins import Origins, host_of, origin
from tests.fakes.llm import Answer, FakeLLM
from tests.support.discord_fixtures import Rig, fake_discord, llm, rig, world
from tests.support.helpers import wait_until
from tests.support.slack_fixtures import ALICE, BOT, slack_rig

__all__ = ["fake_discord", "llm", "rig", "world"]  # fixtures used by name


@dataclass
class Stranger:
    """A server that is not the platform's: it serves any path and keeps each request's headers."""

    port: int = 0
    seen: list[dict[str, str]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://localhost:{self.port}{path}"  # "localhost": another host than the fake's 127.0.0.1

    async def serve(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        return web.Response(body=b"bytes from elsewhere", content_type="text/plain")


@pytest.fixture
async def stranger() -> AsyncIterator[Stranger]:
    found = Stranger()
    app = web.Application()
    app.router.add_get("/{tail:.*}", found.serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.port = int(runner.addresses[0][1])
    try:
        yield found
    finally:
        await runner.cleanup()


def test_origins_compare_scheme_host_and_port() -> None:
    hosts = Origins.of("https://files.slack.com", "http://127.0.0.1:8123/api/", None)
    assert hosts.trusts("https://files.slack.com/files-pri/T1-F1/a.txt")
    assert hosts.trusts("https://FILES.slack.com:443/x")
    assert hosts.trusts("http://127.0.0.1:8123/files-pri/x")
    assert not hosts.trusts("http://files.slack.com/x")  # not https
    assert not hosts.trusts("https://files.slack.com.evil.example/x")
    assert not hosts.trusts("https://evil.example/?https://files.slack.com/")
    assert not hosts.trusts("http://127.0.0.1:8124/x")
    assert not hosts.trusts("file:///etc/passwd")
    assert not hosts.trusts("https://files.slack.com:notaport/x")
    assert origin("ftp://files.slack.com/") is None
    assert host_of("https://evil.example/path?sig=secret") == "evil.example"


async def test_a_slack_file_link_to_another_host_is_not_fetched_and_is_logged(
    base_env: dict[str, str], fake_llm: FakeLLM, stranger: Stranger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="adapters.slack.files")
    fake_llm.answer = Answer.of("Answered anyway.")
    async with slack_rig(base_env, fake_llm) as rig:
        forged = rig.fake.add_file("notes.txt", b"the real bytes", "text/plain")
        forged.url_private = stranger.url("/steal")
        message = rig.fake.user_message("C1", ALICE.id, f"<@{BOT}> read this", files=[forged])
        for event in rig.fake.events_for(message):
            await rig.deliver(event)
        await rig.wait_reply(
            message,
            "Answered anyway.\n\n_(`notes.txt` was left out: I could not fetch it: its link does not point "
            "at Slack.)_",
        )
    assert stranger.seen == []  # neither the token nor a request went there
    assert "names localhost, not Slack's file host: not fetched" in caplog.text
    assert "/steal" not in caplog.text


async def test_a_redirect_from_slacks_file_host_to_another_host_drops_the_token(
    base_env: dict[str, str], fake_llm: FakeLLM, stranger: Stranger
) -> None:
    fake_llm.answer = Answer.of("Read it.")
    async with slack_rig(base_env, fake_llm) as rig:
        moved = rig.fake.add_file("moved.txt", b"never served by Slack", "text/plain")
        moved.redirect_to = stranger.url("/cdn/moved.txt")
        message = rig.fake.user_message("C1", ALICE.id, f"<@{BOT}> read this", files=[moved])
        for event in rig.fake.events_for(message):
            await rig.deliver(event)
        await rig.wait_reply(message, "Read it.")
        assert rig.fake.downloads == [(moved.id, True)]  # Slack's host got the token…
        assert "bytes from elsewhere" in fake_llm.requests[0]["messages"][-1]["content"]
    [headers] = stranger.seen
    assert "Authorization" not in headers  # …the other host did not
    assert rig.settings.slack.bot_token not in str(headers)


async def test_a_discord_attachment_on_another_host_is_not_fetched(
    rig: Rig, stranger: Stranger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="adapters.discord.files")
    fake, w = rig.fake, rig.world
    rig.llm.answer = Answer.of("Answered anyway.")
    await fake.user_message(w.general, w.alice, f"{fake.bot.mention} read this", files=[
        ("notes.txt", b"real", "text/plain", stranger.url("/attachments/1/2/notes.txt")),
    ])
    await wait_until(lambda: "Answered anyway." in fake.bot_text(w.general), timeout=10)
    await wait_until(lambda: rig.engine.live_answers == 0, timeout=10)
    assert "`notes.txt` was left out: I could not fetch it: its link does not point at Discord." in (
        fake.bot_text(w.general)
    )
    assert stranger.seen == [] and fake.downloads == []
    assert "names localhost, not Discord's CDN: not fetched" in caplog.text
