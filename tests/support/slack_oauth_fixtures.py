"""A Slack bot in multi-workspace mode for end-to-end tests: fake Slack (with OAuth) + fake model
+ real Redis + real bolt, the install flow driven over HTTP as a browser would.

async with oauth_rig(base_env, fake_llm) as rig:
    await rig.install(ACME)              # /slack/install → consent → /slack/oauth_redirect
    msg = await rig.mention(ACME, "C1", ALICE, "hi")
    await rig.wait_answer(ACME, msg, fake_llm.answer.text)
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from adapters.slack import SlackAdapter
from adapters.slack.installations import slack_installs
from bot.app.host import StoreHost
from bot.app.runtime import open_engine
from bot.config import Settings, load_settings
from bot.engine import Engine
from bot.state.sealed import new_key
from tests.fakes.llm import FakeLLM
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_events import HttpReply, SignedSender, new_id, slash_command
from tests.fakes.slack_oauth import Install
from tests.fakes.slack_state import Message, User
from tests.support.slack_fixtures import ADMIN, ALICE, BOB, SECRET

ACME = Install("T0ACME", "Acme", bot_user_id="U0BOTACME", bot_id="B0ACME")
GLOBEX = Install("T0GLOBEX", "Globex", bot_user_id="U0BOTGLOBEX", bot_id="B0GLOBEX")
LINK = re.compile(r'href="(https://slack\.com/oauth/v2/authorize\?[^"]+)"')


def oauth_env(base: dict[str, str], fake: FakeSlack, **extra: str) -> dict[str, str]:
    return base | {
        "SLACK_API_URL": fake.api_url,
        "SLACK_MODE": "http",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_CLIENT_ID": fake.oauth.client_id,
        "SLACK_CLIENT_SECRET": fake.oauth.client_secret,
        "SLACK_STATE_SECRET": "state-secret-for-tests",
        "SLACK_TOKEN_ENCRYPTION_KEY": new_key(),
    } | extra


@dataclass
class Redirect:
    status: int
    body: str


@dataclass
class OAuthRig:
    fake: FakeSlack
    llm: FakeLLM
    engine: Engine
    adapter: SlackAdapter
    settings: Settings
    sender: SignedSender
    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.adapter.port}"

    async def install_link(self) -> tuple[str, str]:
        """GET /slack/install: the Add to Slack link and the state cookie it set."""
        async with self.http.get(f"{self.base}/slack/install") as response:
            assert response.status == 200, response.status
            page = await response.text()
            cookie = response.headers["Set-Cookie"].split(";")[0]
        found = LINK.search(page)
        assert found, page
        return html.unescape(found.group(1)), cookie

    async def redirect(self, url: str, cookie: str) -> Redirect:
        """The browser follows Slack's redirect back to the app."""
        async with self.http.get(url, headers={"Cookie": cookie}, allow_redirects=False) as response:
            return Redirect(response.status, await response.text())

    async def install(self, install: Install) -> Redirect:
        """Install the app in `install`'s workspace, as its admin would (its bot user joins it)."""
        self.fake.add_user(User(install.bot_user_id, "chatbot", is_bot=True, team_id=install.key))
        link, cookie = await self.install_link()
        done = await self.redirect(self.fake.oauth.approve(link, install), cookie)
        assert done.status == 200, done
        return done

    async def deliver(self, install: Install, event: dict[str, object]) -> HttpReply:
        return await self.sender.send_event(self.fake.callback(dict(event), install=install))

    async def mention(
        self, install: Install, channel: str, user: str, text: str, *, team: str = ""
    ) -> Message:
        message = self.fake.user_message(channel, user, f"<@{install.bot_user_id}> {text}")
        reply = await self.deliver(install, self.fake.mention_event(install, message, team=team))
        assert reply.status == 200, reply
        return message

    async def persona(self, install: Install, channel: str, user: str, text: str) -> str:
        """`/persona text` in `install`'s workspace; the ephemeral reply's text."""
        before = len(self.fake.responses)
        form = slash_command(
            command="/persona", text=text, user_id=user, channel_id=channel, team_id=install.key,
            app_id=self.fake.app_id, response_url=f"{self.fake.base}/response/{new_id('cmd')}",
        )
        reply = await self.sender.send_command(form)
        assert reply.status == 200, reply
        responses = await self.fake.wait_for(lambda: self.fake.responses[before:])
        return str(responses[0].body.get("text", ""))

    async def wait_answer(self, install: Install, message: Message, text: str) -> None:
        await self.fake.wait_for(
            lambda: self.fake.replies_by(install, message.channel, message.ts) == text
            and self.engine.live_answers == 0,
            10.0,
        )


@asynccontextmanager
async def oauth_rig(base_env: dict[str, str], llm: FakeLLM, **extra_env: str) -> AsyncIterator[OAuthRig]:
    async with FakeSlack() as slack:
        for user in (ALICE, BOB, ADMIN):
            slack.add_user(dataclasses.replace(user))
        env = oauth_env(base_env | {"TOGETHER_BASE_URL": llm.url, "LLM_RETRY_BASE_DELAY": "0.01"}, slack)
        settings = load_settings(env | extra_env, dotenv=False)
        settings = dataclasses.replace(settings, slack=dataclasses.replace(settings.slack, port=0))
        async with open_engine(settings) as engine, aiohttp.ClientSession() as http:
            installs = await slack_installs(settings.slack, StoreHost(settings, engine.redis))
            adapter = SlackAdapter(settings, engine, installs)
            await adapter.start()
            slack.oauth.redirect_url = f"http://127.0.0.1:{adapter.port}/slack/oauth_redirect"
            sender = slack.deliver_http_to(f"http://127.0.0.1:{adapter.port}/slack/events", SECRET)
            rig = OAuthRig(slack, llm, engine, adapter, settings, sender, http)
            try:
                yield rig
                await slack.wait_for(lambda: engine.live_answers == 0, 10.0)
            finally:
                await engine.drain(5)
                await adapter.stop()
