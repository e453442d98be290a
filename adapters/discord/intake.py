"""Which messages the bot answers, and which conversation each belongs to.

- A DM channel is one rolling conversation (until `/forget`).
- In a server channel a mention starts a conversation; replying to any of the
  bot's messages continues it. The reply chain is the conversation, keyed by
  the message at its root.
- In a thread, a mention makes the thread the conversation; later messages
  there are answered without a mention unless they address someone else.
- With DISCORD_THREADS=true a mention in a channel opens a thread for the answer.

When the store has no history for a conversation, `backfill` rebuilds it from
Discord: the reply chain, the thread, or the DM history.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import discord

from adapters.discord.files import DiscordFiles
from adapters.discord.messages import (
    author_name,
    is_from_bot,
    is_system,
    mentions_me,
    mentions_others,
    prompt_text,
    replied_id,
    replied_message,
)
from adapters.discord.surface import PLATFORM, Channel, Pace
from bot.contract import Backfill, ChannelScope, ConversationKey, HistoryEntry, Sender
from bot.lru import Lru

log = logging.getLogger(__name__)

DM_WORKSPACE = "dm"
MAX_BACKFILL = 100  # messages read back from Discord when the store has none
MAX_CHAIN_WALK = 200  # hops when finding the root of a reply chain
THREAD_NAME_CHARS = 80
MEMORY = 100_000  # entries per in-process index (reply-chain roots, threads joined, …)


def dm_key(channel_id: int) -> ConversationKey:
    return ConversationKey(PLATFORM, DM_WORKSPACE, str(channel_id), str(channel_id))


def thread_key(thread: discord.Thread) -> ConversationKey:
    # The persona belongs to the parent channel: threads run with their channel's persona.
    return ConversationKey(PLATFORM, str(thread.guild.id), str(thread.parent_id), str(thread.id))


def scope_of(channel: object, guild: discord.Guild | None, channel_id: int) -> ChannelScope:
    """The persona scope of a channel: a DM, a server channel, or a thread's parent."""
    if guild is None:
        return ChannelScope(PLATFORM, DM_WORKSPACE, str(channel_id))
    if isinstance(channel, discord.Thread):
        return ChannelScope(PLATFORM, str(guild.id), str(channel.parent_id))
    return ChannelScope(PLATFORM, str(guild.id), str(channel_id))


@dataclass(frozen=True)
class Route:
    """Where an incoming message goes: its conversation, and where and how to answer."""

    conversation: ConversationKey
    channel: Channel
    reply_to: int | None
    backfill: Backfill | None = None
    open_thread: bool = False  # DISCORD_THREADS: open a thread on the message, answer there
    context_only: bool = False  # kept in the history, not answered


class Router:
    def __init__(
        self,
        client: discord.Client,
        knows: Callable[[ConversationKey], Awaitable[bool]],
        heeds: Callable[[Sender], bool],
        pace: Pace,
        *,
        threads: bool,
        files: DiscordFiles | None = None,
    ) -> None:
        self.client = client
        self.files = files
        self.knows = knows
        self.pace = pace
        self.heeds = heeds
        self.threads = threads
        # Message id -> root of its reply chain, for chains this process has seen,
        # so continuing a conversation rarely needs to walk the chain on Discord.
        self.roots: Lru[int, int] = Lru(MEMORY)
        self.active_threads: Lru[int, bool] = Lru(MEMORY)
        self.last_conversation: Lru[tuple[int, int], ConversationKey] = Lru(MEMORY)

    @property
    def me(self) -> discord.ClientUser:
        assert self.client.user is not None, "routing before the client logged in"
        return self.client.user

    async def route(self, message: discord.Message) -> Route | None:
        """The route for a message the bot should answer, or None to ignore it."""
        if not self.heeds(self._sender(message)):
            return None
        channel = message.channel
        if message.guild is None:
            if not isinstance(channel, discord.DMChannel):
                return None  # group DMs are not for bots
            backfill = self._history_backfill(message, channel)
            return self._remember(message, Route(dm_key(channel.id), channel, message.id, backfill))
        if isinstance(channel, discord.Thread):
            return await self._route_in_thread(message, channel)
        return await self._route_in_channel(message, channel)

    def _sender(self, message: discord.Message) -> Sender:
        if message.author.id == self.me.id:
            return Sender.ME
        if is_system(message):
            return Sender.SYSTEM
        return Sender.BOT if is_from_bot(message) else Sender.PERSON

    async def _route_in_thread(self, message: discord.Message, thread: discord.Thread) -> Route | None:
        key = thread_key(thread)
        if not mentions_me(message, self.me):
            if not await self._in_thread(thread, key):
                return None
            if mentions_others(message, self.me):  # addressed to someone else: context only
                return Route(key, thread, None, context_only=True)
        self.active_threads.put(thread.id, True)
        route = Route(key, thread, message.id, self._thread_backfill(message, thread))
        return self._remember(message, route)

    async def _in_thread(self, thread: discord.Thread, key: ConversationKey) -> bool:
        """Has the bot joined this thread's conversation (answered there, or opened it)?"""
        if thread.id in self.active_threads or thread.owner_id == self.me.id:
            return True
        return await self.knows(key)

    async def _route_in_channel(self, message: discord.Message, channel: Channel) -> Route | None:
        parent_id = replied_id(message)
        parent = replied_message(message)
        to_me = parent is not None and parent.author.id == self.me.id
        if not (to_me or mentions_me(message, self.me)):
            return None
        guild = message.guild
        assert guild is not None
        if self.threads and parent_id is None:
            placeholder = ConversationKey(PLATFORM, str(guild.id), str(channel.id), str(message.id))
            return Route(placeholder, channel, None, open_thread=True)
        root = await self.root_of(message)
        self.roots.put(message.id, root)
        key = ConversationKey(PLATFORM, str(guild.id), str(channel.id), str(root))
        backfill = None if root == message.id else self._chain_backfill(message)
        return self._remember(message, Route(key, channel, message.id, backfill))

    async def open_thread(self, message: discord.Message) -> Route:
        """DISCORD_THREADS=true: open a thread on the message; the thread is the conversation."""
        name = prompt_text(message, self.me)[:THREAD_NAME_CHARS].strip() or "Conversation"
        await self.pace.request()
        thread = await message.create_thread(name=name, auto_archive_duration=1440)
        self.active_threads.put(thread.id, True)
        return self._remember(message, Route(thread_key(thread), thread, None))

    def _remember(self, message: discord.Message, route: Route) -> Route:
        """Keep the author's latest conversation per channel: `/forget` there forgets it."""
        self.last_conversation.put((message.author.id, message.channel.id), route.conversation)
        return route

    def remember_post(self, conversation: ConversationKey, message_id: int) -> None:
        """A message the bot posted in a reply chain: replies to it continue the chain."""
        if conversation.workspace != DM_WORKSPACE and conversation.thread.isdigit():
            self.roots.put(message_id, int(conversation.thread))

    # -- reply chains -------------------------------------------------------------------------

    async def root_of(self, message: discord.Message) -> int:
        """The first message of the reply chain `message` belongs to."""
        current: discord.Message | None = message
        current_id = message.id
        for _ in range(MAX_CHAIN_WALK):
            if current_id in self.roots:
                return self.roots[current_id]
            assert current is not None
            parent_id = replied_id(current)
            if parent_id is None:
                return current_id
            parent = replied_message(current) or await self._fetch(current.channel, parent_id)
            if parent is None:
                return current_id  # the chain is broken (a deleted message): start here
            current, current_id = parent, parent_id
        return current_id

    def _chain_backfill(self, message: discord.Message) -> Backfill:
        async def backfill() -> list[HistoryEntry]:
            earlier: list[discord.Message] = []
            current = replied_message(message)
            parent_id = replied_id(message)
            while parent_id is not None and len(earlier) < MAX_BACKFILL:
                if current is None or current.id != parent_id:
                    current = await self._fetch(message.channel, parent_id)
                if current is None:
                    break
                earlier.append(current)
                parent_id, current = replied_id(current), replied_message(current)
            return self._entries(reversed(earlier))

        return backfill

    # -- threads and DMs -----------------------------------------------------------------------

    def _thread_backfill(self, message: discord.Message, thread: discord.Thread) -> Backfill:
        async def backfill() -> list[HistoryEntry]:
            earlier = await self._read_history(thread, message)
            starter = await self._starter(thread)
            return self._entries(([starter] if starter else []) + earlier)

        return backfill

    def _history_backfill(self, message: discord.Message, channel: Channel) -> Backfill:
        async def backfill() -> list[HistoryEntry]:
            return self._entries(await self._read_history(channel, message))

        return backfill

    async def _read_history(self, channel: Channel, before: discord.Message) -> list[discord.Message]:
        await self.pace.request()
        try:
            newest_first = [m async for m in channel.history(limit=MAX_BACKFILL, before=before)]
        except discord.HTTPException as exc:
            log.warning("could not read the history of channel %s: %s", channel.id, exc)
            return []
        return list(reversed(newest_first))

    async def _starter(self, thread: discord.Thread) -> discord.Message | None:
        """The channel message a thread was opened on (it lives in the parent channel)."""
        parent = thread.parent
        if parent is None or not isinstance(parent, discord.TextChannel):
            return None
        return await self._fetch(parent, thread.id)

    async def _fetch(self, channel: object, message_id: int) -> discord.Message | None:
        if not isinstance(channel, discord.abc.Messageable):
            return None
        await self.pace.request()
        try:
            return await channel.fetch_message(message_id)
        except discord.NotFound:
            return None
        except discord.HTTPException as exc:
            log.warning("could not fetch message %s: %s", message_id, exc)
            return None

    def _entries(self, messages: Iterable[discord.Message]) -> list[HistoryEntry]:
        """Bot messages as `assistant` (the core joins the parts of one answer), the rest as named `user`s."""
        entries: list[HistoryEntry] = []
        for message in messages:
            if is_system(message):
                continue
            ts = message.created_at.timestamp()
            if message.author.id == self.me.id:
                entries.append(HistoryEntry("assistant", message.content, msg_id=str(message.id), ts=ts))
            else:
                text = prompt_text(message, self.me)
                files = self.files.attachments(message) if self.files else ()
                if text or files:
                    entries.append(HistoryEntry(
                        "user", text, author_name(message), str(message.id), ts, attachments=files
                    ))
        return entries
