"""Summaries, the Discord way (docs/discord.md, "Summaries").

- The message context menu "Summarize" (Apps → Summarize): the thread the message is in, or
  else its reply chain, summarised where it is (in the thread, or as a reply to the message),
  streamed like an answer with its Stop button.
- `/summarize [window]`: the channel's messages within the window and its threads' messages,
  shown only to the person who asked (the interaction's ephemeral response, edited as it grows).

Sources link to the messages' jump URLs. discord.py paces the history reads by Discord's own
rate-limit headers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import discord
from discord import app_commands

from adapters.discord.intake import DM_WORKSPACE, Router, thread_key
from adapters.discord.surface import MAX_CHARS, NO_PINGS, PLATFORM, DiscordSurface, Pace, counted
from bot.contract import Author, Controls, ConversationKey, Core, SurfaceLimits
from bot.contract.budgets import Window
from bot.contract.summaries import CHANNEL, THREAD, SourceMessage, SourceUnreadable, SummaryAsk
from bot.conversations.windows import BadWindow, parse_window

log = logging.getLogger(__name__)

MENU = "Summarize"
MOST_READ = 5000  # messages read at most (SUMMARY_MAX_MESSAGES keeps the latest of them)
STARTED = "Summarizing… the summary appears {where}."
GONE_MESSAGE = "I can't read those messages (they were deleted, or I can't see that channel)."
ORIGINAL = "@original"
# An interaction's webhook takes about 5 edits in 5 s; a summary's edits stay well below.
RESPONSE_EDITS, RESPONSE_SECONDS = 4, 5.1


def build_summary_commands(
    tree: app_commands.CommandTree[discord.Client], summaries: DiscordSummaries
) -> None:
    """Add the "Summarize" message menu and `/summarize [window]` to `tree`."""

    @tree.context_menu(name=MENU)
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    @app_commands.allowed_installs(guilds=True, users=False)
    async def summarize_message(interaction: discord.Interaction, message: discord.Message) -> None:
        await summaries.menu(interaction, message)

    @tree.command(name="summarize", description="Summarise this channel's recent messages (only you see it)")
    @app_commands.describe(window="How far back: 2h, 24h (the default), 7d, or since monday")
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    @app_commands.allowed_installs(guilds=True, users=False)
    async def summarize(interaction: discord.Interaction, window: str = "") -> None:
        await summaries.command(interaction, window)


class ResponseSurface:
    """A summary for one person: the interaction's ephemeral response, edited as it grows; a
    summary longer than one message goes on in ephemeral follow-ups."""

    def __init__(self, interaction: discord.Interaction, pace: Pace) -> None:
        self.interaction = interaction
        self.pace = pace
        self.window = Window(f"discord:bot:interaction:{interaction.id}", RESPONSE_EDITS, RESPONSE_SECONDS)
        self._posted = False

    @property
    def limits(self) -> SurfaceLimits:
        return SurfaceLimits(MAX_CHARS, 1.0, post_windows=(self.window,), edit_windows=(self.window,))

    async def post(self, text: str, *, complete: bool = False, controls: Controls | None = None) -> str:
        if not self._posted:
            self._posted = True
            await self.edit(ORIGINAL, text)
            return ORIGINAL
        sent = await counted("create_message", self.interaction.followup.send(
            text, ephemeral=True, allowed_mentions=NO_PINGS, wait=True))
        return str(sent.id)

    async def edit(self, message_id: str, text: str, *, controls: Controls | None = None) -> None:
        if message_id == ORIGINAL:
            await counted("edit_message", self.interaction.edit_original_response(content=text))
        else:
            edit = self.interaction.followup.edit_message(int(message_id), content=text)
            await counted("edit_message", edit)

    async def delete(self, message_id: str) -> None:
        if message_id == ORIGINAL:
            await self.interaction.delete_original_response()
        else:
            await self.interaction.followup.delete_message(int(message_id))

    async def set_status(self, status: str | None) -> None:
        if status and not self._posted:
            await self.interaction.edit_original_response(content=f"_{status}_")


class DiscordSummaries:
    def __init__(self, core: Core, router: Router, pace: Pace) -> None:
        self.core = core
        self.router = router
        self.pace = pace

    async def menu(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Apps → Summarize on `message`: its thread, or else its reply chain, summarised there."""
        if not await self.core.claim(PLATFORM, str(interaction.id)):
            return
        channel = message.channel
        links: dict[str, str] = {}
        if isinstance(channel, discord.Thread):
            conversation = thread_key(channel)
            surface = DiscordSurface(channel, reply_to=None, pace=self.pace)
            where = "in this thread"

            async def read() -> list[SourceMessage]:
                return [self._source(m, links) async for m in _history(channel)]
        else:
            root = await self.router.root_of(message)
            conversation = ConversationKey(PLATFORM, _workspace(interaction), str(channel.id), str(root))
            surface = DiscordSurface(channel, reply_to=message.id, pace=self.pace)
            where = "as a reply to that message"

            async def read() -> list[SourceMessage]:
                chain = [m async for m in _history(channel, after=discord.Object(root - 1))]
                return [self._source(m, links) for m in chain if await self._in_chain(m, root)]

        await interaction.response.send_message(STARTED.format(where=where), ephemeral=True)
        self.core.summarize(SummaryAsk(
            conversation, _author(interaction), surface, THREAD, read=_readable(read),
            link=lambda m: _link(links, m), tell=_follow_up(interaction),
        ))

    async def command(self, interaction: discord.Interaction, typed: str) -> None:
        """`/summarize [window]`: this channel's window and its threads', for the asker alone."""
        if not await self.core.claim(PLATFORM, str(interaction.id)):
            return
        try:
            window = parse_window(typed, datetime.now(UTC).timestamp())
        except BadWindow as bad:
            await interaction.response.send_message(str(bad), ephemeral=True)
            return
        channel = interaction.channel
        await interaction.response.defer(ephemeral=True, thinking=True)
        links: dict[str, str] = {}
        after = datetime.fromtimestamp(window.oldest, UTC)

        async def read() -> list[SourceMessage]:
            found = [m async for m in _history(channel, after=after)]
            for thread in getattr(channel, "threads", ()):
                found += [m async for m in _history(thread, after=after)]
            found.sort(key=lambda m: m.created_at)
            return [self._source(m, links) for m in found]

        conversation = ConversationKey(PLATFORM, _workspace(interaction), str(interaction.channel_id), "")
        self.core.summarize(SummaryAsk(
            conversation, _author(interaction), ResponseSurface(interaction, self.pace), CHANNEL,
            read=_readable(read), link=lambda m: _link(links, m), window=window.words,
            tell=lambda text: _edit_original(interaction, text),
        ))

    async def _in_chain(self, message: discord.Message, root: int) -> bool:
        return message.id == root or await self.router.root_of(message) == root

    @staticmethod
    def _source(message: discord.Message, links: dict[str, str]) -> SourceMessage:
        """A message as a summary reads it: bots' messages and files named, not read."""
        links[str(message.id)] = message.jump_url
        who = message.author.display_name
        files = " ".join(f"[file: {a.filename}]" for a in message.attachments)
        text = f"[a message from {who}, not read]" if message.author.bot else message.clean_content
        return SourceMessage(str(message.id), who, f"{text} {files}".strip(), message.created_at.timestamp())


async def _history(
    channel: Any, after: discord.abc.Snowflake | datetime | None = None
) -> AsyncIterator[discord.Message]:
    async for message in channel.history(limit=MOST_READ, after=after, oldest_first=True):
        yield message


def _readable(read: Any) -> Any:
    """`read`, with Discord's refusals (the channel gone, no access) worded for the asker."""
    async def reading() -> list[SourceMessage]:
        try:
            return list(await read())
        except (discord.NotFound, discord.Forbidden):
            raise SourceUnreadable(GONE_MESSAGE) from None
    return reading


async def _link(links: dict[str, str], message: SourceMessage) -> str:
    return links.get(message.id, "")


def _follow_up(interaction: discord.Interaction) -> Any:
    async def tell(text: str) -> None:
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
    return tell


async def _edit_original(interaction: discord.Interaction, text: str) -> None:
    await interaction.edit_original_response(content=text)


def _author(interaction: discord.Interaction) -> Author:
    return Author(str(interaction.user.id), interaction.user.display_name)


def _workspace(interaction: discord.Interaction) -> str:
    return str(interaction.guild_id) if interaction.guild_id else DM_WORKSPACE
