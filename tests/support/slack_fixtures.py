"""A running Slack bot for end-to-end tests: fake Slack + fake model + real Redis + real bolt.

async with slack_rig(env, fake_llm, mode="socket") as rig:
    msg = await rig.say("C1", ALICE, "<@U0BOT> hi")
    await rig.wait_reply(msg, fake_llm.answer.text)
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from adapters.slack import SlackAdapter
from adapters.slack.assistant import LOOKING_AT
from bot.app.runtime import open_engine
from bot.config import Settings, load_settings
from bot.contract import ConversationKey
from bot.engine import Engine
from tests.fakes.llm import FakeLLM
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_events import HttpReply, SignedSender
from tests.fakes.slack_state import Message, User
from tests.support.helpers import wait_until

BOT = "U0BOT"
ALICE = User("U0ALICE", "alice", real_name="Alice Liddell", display_name="Alice")
BOB = User("U0BOB", "bob", real_name="Bob Dylan", display_name="Bob")
ADMIN = User("U0ADMIN", "ada", real_name="Ada Admin", display_name="Ada", is_admin=True)
SECRET = "test-signing-secret"


def slack_env(base: dict[str, str], fake: FakeSlack, mode: str, **extra: str) -> dict[str, str]:
    env = base | {"SLACK_BOT_TOKEN": fake.bot_token, "SLACK_API_URL": fake.api_url}
    if mode == "socket":
        env |= {"SLACK_APP_TOKEN": fake.app_token, "SLACK_MODE": "socket"}
    else:
        env |= {"SLACK_SIGNING_SECRET": SECRET, "SLACK_MODE": "http"}
    return env | extra


@dataclass
class SlackRig:
    fake: FakeSlack
    llm: FakeLLM
    engine: Engine
    adapter: SlackAdapter
    settings: Settings
    mode: str
    sender: SignedSender | None = None

    async def deliver(self, event: dict[str, Any], *, event_id: str | None = None) -> None:
        """Slack delivers one event to the app (and it is acknowledged)."""
        if self.sender is not None:
            reply = await self.sender.send_event(self.fake.callback(event, event_id=event_id))
            assert reply.status == 200, reply
        else:
            envelope = await self.fake.push_event(event, event_id=event_id)
            await self.fake.wait_ack(envelope)

    async def say(self, channel: str, user: User, text: str, *, thread_ts: str | None = None) -> Message:
        """A person writes; every event Slack would send for it is delivered."""
        message = self.fake.user_message(channel, user.id, text, thread_ts=thread_ts)
        for event in self.fake.events_for(message):
            await self.deliver(event)
        return message

    async def command(
        self, text: str, *, user: User, channel: str, command: str = "/persona"
    ) -> dict[str, Any]:
        """Run `/persona text` (or `command`); returns what the bot responded first (via response_url)."""
        before = len(self.fake.responses)
        if self.sender is not None:
            reply = await self.sender.send_command(
                self.fake.command_payload(text, user=user.id, channel=channel, command=command)
            )
            assert reply.status == 200, reply
        else:
            await self.fake.wait_ack(
                await self.fake.push_command(text, user=user.id, channel=channel, command=command)
            )
        responses = await self.fake.wait_for(lambda: self.fake.responses[before:])
        body: dict[str, Any] = responses[0].body
        return body

    async def send_signed(self, event: dict[str, Any], **options: Any) -> HttpReply:
        assert self.sender is not None, "HTTP mode only"
        return await self.sender.send_event(self.fake.callback(event), **options)

    async def wait_reply(self, message: Message, text: str, *, within: float = 10.0) -> None:
        """Wait until the bot's replies in the message's thread read exactly `text` and
        no answer is still running."""
        thread = message.thread_ts or message.ts
        await self.fake.wait_for(
            lambda: self.fake.seen_text(message.channel, thread) == text and self.engine.live_answers == 0,
            within,
        )

    async def idle(self, within: float = 10.0) -> None:
        await self.fake.wait_for(lambda: self.engine.live_answers == 0, within)

    async def wait_looking_at(self, channel: str, thread_ts: str, looking_at: str) -> None:
        """Until the bot has stored which channel an assistant thread looks at. Bolt acks an
        event before its handler runs, so a message sent right after could overtake it."""
        conversation = ConversationKey("slack", self.fake.team_id, channel, thread_ts)

        async def stored() -> bool:
            return (await self.engine.context(conversation)).get(LOOKING_AT) == looking_at

        await wait_until(stored, timeout=5)


@asynccontextmanager
async def slack_rig(
    base_env: dict[str, str],
    llm: FakeLLM,
    *,
    mode: str = "socket",
    fake: FakeSlack | None = None,
    **extra_env: str,
) -> AsyncIterator[SlackRig]:
    async with FakeSlack() if fake is None else _given(fake) as slack:
        slack.clock = llm.clock  # one time for the bot and every fake (tests/support/clock.py)
        for user in (ALICE, BOB, ADMIN):
            slack.add_user(dataclasses.replace(user))
        env = slack_env(
            base_env | {"TOGETHER_BASE_URL": llm.url, "LLM_RETRY_BASE_DELAY": "0.01"},
            slack,
            mode,
            **extra_env,
        )
        settings = load_settings(env, dotenv=False)
        if mode == "http":  # any free port
            settings = dataclasses.replace(settings, slack=dataclasses.replace(settings.slack, port=0))
        async with open_engine(settings, llm.clock) as engine:
            adapter = SlackAdapter(settings, engine)
            await adapter.start()
            rig = SlackRig(slack, llm, engine, adapter, settings, mode)
            if mode == "http":
                rig.sender = slack.deliver_http_to(f"http://127.0.0.1:{adapter.port}/slack/events", SECRET)
            else:
                await slack.wait_for(lambda: slack.connected)
            try:
                yield rig
                await rig.idle()
            finally:
                await engine.drain(5)
                await adapter.stop()


@asynccontextmanager
async def _given(fake: FakeSlack) -> AsyncIterator[FakeSlack]:
    async with fake:
        yield fake
