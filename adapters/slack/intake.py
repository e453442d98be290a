"""Which Slack messages the bot answers, turned into core `Turn`s.

- `app_mention` in a channel: answer in the message's thread (its thread, or a new
  one under it). Mid-thread, the earlier thread comes in through `Turn.backfill`.
- `message` in a DM: answered in a thread under it; replies there continue it.
- `message` in a channel thread without a mention: answered when the bot is part of
  that thread (the store knows it, or, when Redis lost it, the bot has written in
  the thread); a reply that mentions someone else and not the bot is not for it.
- `message_changed` / `message_deleted` of a person's message in a conversation the bot
  keeps: the stored history follows (`Core.edited`, `Core.deleted`); editing the question
  being answered, or the last one answered, has it answered again in place.
- Ignored: the bot's own messages, other bots (unless allowed), other subtypes, and
  anything already answered: every message is claimed once by its channel and ts,
  whichever event, retry or replica delivers it.

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


class ThreadContext(Protocol):
    async def __call__(self, conversation: ConversationKey, question: str) -> str: ...


async def _no_context(conversation: ConversationKey, question: str) -> str:
    return ""


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
        thread_context: ThreadContext = _no_context,
    ) -> None:
        self.engine = engine
        self.me = me
        self.people = people
        self.threads = threads
        self.make_surface = make_surface
        self.forget = forget
        self.files = files
        # DM threads may be Slack assistant threads: titled, and told what the person looks at.
        self.thread_context = thread_context

    async def on_mention(self, event: dict[str, Any], team: str) -> None:
        message = Incoming.parse(event, team, time.monotonic())
        if self._from_ignored_author(message):
            return
        await self._answer(message)

    async def on_message(self, event: dict[str, Any], team: str) -> None:
        message = Incoming.parse(event, team, time.monotonic())
        if message.subtype == "message_changed":
            await self._changed(event, team)
            return
        if message.subtype == "message_deleted":
            await self._deleted(event, team)
            return
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

    async def _changed(self, event: dict[str, Any], team: str) -> None:
        """A message was edited: `event.message` is it now (the bot's own edits come here too)."""
        now = event.get("message") or {}
        where = {"channel": event.get("channel"), "channel_type": event.get("channel_type")}
        message = Incoming.parse({**now, **where, "subtype": None}, team, time.monotonic())
        before = str((event.get("previous_message") or {}).get("text") or "")
        if self._from_ignored_author(message) or message.text == before:
            return  # the bot's own edits; an unfurl or other change that left the text alone
        conversation = self._conversation(message)
        edit_id = f"{message.event_id}:edited:{event.get('event_ts') or event.get('ts') or ''}"
        name = await self.people.name(message.user) if message.user else ""
        place = Place(message.team, message.channel, conversation.thread, message.user, message.ts)
        turn = Turn(
            conversation=conversation,
            author=Author(message.user or message.bot_id or "", name or "someone"),
            text=await to_model_text(message.text, self.me.user_id, self.people.name),
            message_id=message.ts,
            surface=self.make_surface(place, frozenset(mentioned_users(message.text) - {self.me.user_id})),
            received_at=message.received_at,
            event_id=edit_id,
            edited_at=_seconds((now.get("edited") or {}).get("ts") or event.get("event_ts")),
        )
        await self.engine.edited(turn)

    async def _deleted(self, event: dict[str, Any], team: str) -> None:
        deleted_ts = str(event.get("deleted_ts") or "")
        before = event.get("previous_message") or {}
        if not deleted_ts:
            return
        thread = str(before.get("thread_ts") or deleted_ts)
        channel = str(event.get("channel") or "")
        conversation = ConversationKey(PLATFORM, team or str(event.get("team") or ""), channel, thread)
        await self.engine.deleted(conversation, deleted_ts)

    async def _note(self, message: Incoming, conversation: ConversationKey) -> None:
        if not await self.engine.claim(PLATFORM, message.event_id):
            return
        name = await self.people.name(message.user) if message.user else ""
        text = await to_model_text(message.text, self.me.user_id, self.people.name)
        author = Author(message.user or message.bot_id or "", name or "someone")
        await self.engine.note(
            conversation, author, text, message.ts,
            attachments=self.files.attachments(message.files), fetch_file=self.files.fetch,
        )

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
        in_dm_thread = message.channel_type == "im" and message.in_thread
        context = await self.thread_context(conversation, text) if in_dm_thread else ""
        turn = Turn(
            conversation=conversation,
            author=Author(message.user or message.bot_id or "", name or "someone"),
            text=text,
            context=context,
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


def _seconds(ts: object) -> float:
    """A Slack timestamp ("1765000000.000100") as seconds; 0 for none."""
    try:
        return float(str(ts))
    except ValueError:
        return 0.0
