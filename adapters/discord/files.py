"""Discord attachments as the core's attachments, and their downloads.

An attachment's `ref` is `channel:message:attachment` ids, not its URL: Discord's
CDN URLs are signed and expire, so a turn replayed later fetches the message again
(`GET /channels/{channel}/messages/{message}`, paced like any request) for a fresh
URL. Attachments seen recently are kept (bounded) and read without that request.
The Message Content intent the bot already has is what carries attachments.

Downloads carry no token (discord.py fetches CDN URLs bare), and only Discord's CDN
hosts are fetched (and the API's host, `DISCORD_API_URL`, a fake's in tests): an
attachment whose URL names any other host is refused and logged.
"""

from __future__ import annotations

import logging

import discord

from adapters.discord.surface import Pace
from bot.contract import Attachment, FetchFailed
from bot.files.origins import Origins, host_of
from bot.lru import Lru

log = logging.getLogger(__name__)

KNOWN = 10_000  # recently seen attachments, by ref
CDN_HOSTS = ("https://cdn.discordapp.com", "https://media.discordapp.net")


class DiscordFiles:
    def __init__(self, client: discord.Client, pace: Pace) -> None:
        self._client = client
        self._pace = pace
        self._known: Lru[str, discord.Attachment] = Lru(KNOWN)
        self._hosts = Origins.of(*CDN_HOSTS, discord.http.Route.BASE)

    def attachments(self, message: discord.Message) -> tuple[Attachment, ...]:
        found: list[Attachment] = []
        for file in message.attachments:
            ref = f"{message.channel.id}:{message.id}:{file.id}"
            self._remember(ref, file)
            found.append(Attachment(file.filename, file.content_type or "", file.size, ref))
        return tuple(found)

    async def fetch(self, ref: str, limit: int) -> bytes:
        """The attachment's bytes (a `bot.contract.FetchFile`)."""
        file = self._known.get(ref) or await self._find(ref)
        if file.size > limit:
            raise FetchFailed(f"it is over {limit:,} bytes")
        if not self._hosts.trusts(file.url):
            where = host_of(file.url)
            log.warning("a Discord attachment's URL names %s, not Discord's CDN: not fetched", where)
            raise FetchFailed("its link does not point at Discord")
        try:
            data = await file.read()
        except discord.NotFound:
            raise FetchFailed("it was deleted") from None
        except discord.Forbidden:
            raise FetchFailed("Discord refused the download") from None
        except discord.HTTPException as error:
            raise FetchFailed(f"Discord answered {error.status}") from None
        if len(data) > limit:
            raise FetchFailed(f"it is over {limit:,} bytes")
        return data

    async def _find(self, ref: str) -> discord.Attachment:
        try:
            channel_id, message_id, attachment_id = (int(part) for part in ref.split(":"))
        except ValueError:
            raise FetchFailed("it is not a Discord attachment") from None
        channel = self._client.get_partial_messageable(channel_id)
        await self._pace.request()
        try:
            message = await channel.fetch_message(message_id)
        except discord.NotFound:
            raise FetchFailed("its message was deleted") from None
        except discord.HTTPException as error:
            raise FetchFailed(f"Discord answered {error.status}") from None
        for file in message.attachments:
            if file.id == attachment_id:
                self._remember(ref, file)
                return file
        raise FetchFailed("it was removed from its message")

    def _remember(self, ref: str, file: discord.Attachment) -> None:
        self._known[ref] = file
