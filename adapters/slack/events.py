"""Which Slack messages the bot answers, turned into core `Turn`s.

- `app_mention` in a channel: answer in the message's thread (its thread, or a new
  one under it). Mid-thread, the earlier thread comes in through `Turn.backfill`.
- `message` in a DM: answered in a thread under it; replies there continue it.
- `message` in a channel thread without a mention: answered when the bot is part of
  that thread (the store knows it, or, when Redis lost it, the bot has written in
  the thread); a reply that mentions someone else and not the bot is not for it.
- Ignored: the bot's own messages, other bots (unless allowed), edits, deletions and
  other subtypes, and anything already answered: every message is claimed once by
  its channel and ts, whichever event, retry or replica delivers it.

The same message reaches the app twice when it mentions the bot in a channel
(`app_mention` and `message`): the `message` copy is left to `app_mention`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from adapters.slack.files import SlackFiles
from adapters.slack.formatting import mentioned_users, to_model_text
from adapters.slack.people import People
from adapters.slack.surface import Place
from adapters.slack.threads import Identity, ThreadReader
from bot.contract import Author, ConversationKey, Core, ReplySurface, Sender, Turn

log = logging.getLogger(__name__)

PLATFORM = "slack"
# Subtypes that are still a person writing; everything else (edits, deletions, joins,
# channel topic changes, the bot's own echoes) is not a question.
PERSON_SUBTYPES = frozenset({None, "thread_broadcast", "file_share", "me_message"})


class MakeSurface(Protocol):
    def __call__(self, place: Place, allowed_users: frozenset[str] = ...) -> ReplySurface: ...


class ForgetHandler(Protocol):
    async def __call__(self, message: Incoming, conversation: ConversationKey) -> None: ...


@dataclass(frozen=True)
class Incoming:
    """The fields of a Slack message event the bot acts on."""

    team: str
    channel: str
    channel_type: str
    user: str
    ts: str
    thread_ts: str | None
    text: str
    subtype: str | None
    bot_id: str | None
    received_at: float
    files: tuple[dict[str, Any], ...] = ()

    @classmethod
    def parse(cls, event: dict[str, Any], team: str, received_at: float) -> Incoming:
        return cls(
            team=team or str(event.get("team") or ""),
            channel=str(event.get("channel") or ""),
            channel_type=str(event.get("channel_type") or ""),
            user=str(event.get("user") or ""),
            ts=str(event.get("ts") or ""),
            thread_ts=str(event["thread_ts"]) if event.get("thread_ts") else None,
            text=str(event.get("text") or ""),
            subtype=event.get("subtype"),
            bot_id=event.get("bot_id"),
            received_at=received_at,
            files=tuple(f for f in event.get("files") or () if isinstance(f, dict)),
        )

    @property
    def event_id(self) -> str:
        """What the message is claimed by: a ts is unique within one channel only."""
        return f"{self.team}:{self.channel}:{self.ts}"

    @property
    def in_thread(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts


class Intake:
    def __init__(
        self,
        engine: Core,
        me: Identity,
        people: People,
        threads: ThreadReader,
        make_surface: MakeSurface,
        forget: ForgetHandler,
        files: SlackFiles,
    ) -> None:
        self.engine = engine
        self.me = me
        self.people = people
        self.threads = threads
        self.make_surface = make_surface
        self.forget = forget
        self.files = files

    async def on_mention(self, event: dict[str, Any], team: str) -> None:
        message = Incoming.parse(event, team, time.monotonic())
        if self._from_ignored_author(message):
            return
        await self._answer(message)

    async def on_message(self, event: dict[str, Any], team: str) -> None:
        message = Incoming.parse(event, team, time.monotonic())
        if message.subtype not in PERSON_SUBTYPES or self._from_ignored_author(message):
            return
        if message.channel_type == "im":
            await self._answer(message)
            return
        mentioned = mentioned_users(message.text)
        if self.me.user_id in mentioned or not message.in_thread:
            return  # app_mention answers mentions; a channel message without one is not for us
        assert message.thread_ts is not None
        conversation = self._conversation(message)
        if mentioned:  # addressed to someone else in the thread: context, not a question
            await self._note(message, conversation)
            return
        if await self.engine.knows(conversation) or await self.threads.bot_is_in(
            message.channel, message.thread_ts
        ):
            await self._answer(message)

    async def _note(self, message: Incoming, conversation: ConversationKey) -> None:
        if not await self.engine.claim(PLATFORM, message.event_id):
            return
        name = await self.people.name(message.user) if message.user else ""
        text = await to_model_text(message.text, self.me.user_id, self.people.name)
        author = Author(message.user or message.bot_id or "", name or "someone")
        await self.engine.note(conversation, author, text, message.ts)

    def _from_ignored_author(self, message: Incoming) -> bool:
        return not self.engine.heeds(PLATFORM, self._sender(message))

    def _sender(self, message: Incoming) -> Sender:
        if message.user == self.me.user_id or (message.bot_id and message.bot_id == self.me.bot_id):
            return Sender.ME
        if message.bot_id or message.subtype == "bot_message":
            return Sender.BOT
        return Sender.PERSON if message.user else Sender.SYSTEM

    def _conversation(self, message: Incoming) -> ConversationKey:
        return ConversationKey(PLATFORM, message.team, message.channel, message.thread_ts or message.ts)

    async def _answer(self, message: Incoming) -> None:
        # Claim and look up the author at once: both are a round trip, and the intake
        # time (event to model request) is what people feel.
        claimed, name = await asyncio.gather(
            self.engine.claim(PLATFORM, message.event_id),
            self.people.name(message.user) if message.user else _no_name(),
        )
        if not claimed:
            log.debug("already answered: %s %s", message.channel, message.ts)
            return
        conversation = self._conversation(message)
        text = await to_model_text(message.text, self.me.user_id, self.people.name)
        if text.strip().lower().strip(".!") == "forget":
            await self.forget(message, conversation)
            return
        place = Place(
            team_id=message.team,
            channel=message.channel,
            thread_ts=conversation.thread,
            user_id=message.user,
            message_ts=message.ts,
        )
        self.threads.forget_absence(message.channel, conversation.thread)
        backfill = (
            self.threads.backfill(message.channel, conversation.thread, message.ts)
            if message.in_thread
            else None  # a new thread has nothing before this message
        )
        turn = Turn(
            conversation=conversation,
            author=Author(message.user or message.bot_id or "", name or "someone"),
            text=text,
            message_id=message.ts,
            # The people the message mentions may be mentioned back; nobody else.
            surface=self.make_surface(place, frozenset(mentioned_users(message.text) - {self.me.user_id})),
            backfill=backfill,
            received_at=message.received_at,
            event_id=message.event_id,
            attachments=self.files.attachments(message.files),
            fetch_file=self.files.fetch,
        )
        self.engine.submit(turn)


async def _no_name() -> str:
    return ""
