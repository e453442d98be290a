"""Summaries, the Slack way (docs/slack.md, "Summaries").

- The message shortcut "Summarize thread" (`summarize`) on any message: its thread, read with
  `conversations.replies`, summarised in the thread, streamed like an answer (with Stop).
- `/summarize [WINDOW]` in a channel: its top-level messages within the window and their
  thread replies (`conversations.history`, then `conversations.replies` per thread), shown to the
  person who asked only, through the command's `response_url`.

Reads are paced by the shared Tier-3 windows (50 a minute per workspace and method) and honour a
429's Retry-After; a thread or channel gone mid-read ends the summary with one line. Cited
messages become permalinks (`chat.getPermalink`, cached).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.commands import markdown_reply
from adapters.slack.formatting import to_model_text, to_slack_markdown
from adapters.slack.intake import PLATFORM, MakeSurface
from adapters.slack.people import People
from adapters.slack.surface import MINUTE, Place, retry_after
from adapters.slack.threads import Identity
from bot.contract import Author, Controls, ConversationKey, Core, SurfaceLimits
from bot.contract.budgets import Window
from bot.contract.summaries import CHANNEL, THREAD, SourceMessage, SourceUnreadable, SummaryAsk
from bot.conversations.windows import BadWindow, parse_window
from bot.lru import Lru

log = logging.getLogger(__name__)

SHORTCUT = "summarize"
PAGE = 200  # conversations.history and .replies take up to 1,000; Slack advises 200
TIER3_LIMIT = 50  # conversations.history / .replies: Tier 3, 50+ a minute per workspace
MOST_READ = 20_000  # messages read at most (SUMMARY_MAX_MESSAGES keeps the latest of them)
GONE = frozenset({"thread_not_found", "channel_not_found", "not_in_channel", "message_not_found"})
GONE_MESSAGE = "I can't read that conversation any more (it was deleted, or I was removed from it)."
RESPONSE_USES = 5  # Slack takes 5 posts to a response_url
MAX_EPHEMERAL_CHARS = 11_900

Respond = Callable[..., Awaitable[Any]]


class SlackReader:
    """Reads a workspace's threads and channel windows as `SourceMessage`s, paced and patient."""

    def __init__(self, client: AsyncWebClient, core: Core, people: People, me: Identity) -> None:
        self.client = client
        self.core = core
        self.people = people
        self.me = me
        self._links: Lru[tuple[str, str], str] = Lru(5000)

    async def thread(
        self, team: str, channel: str, thread_ts: str, oldest: float = 0.0
    ) -> list[dict[str, Any]]:
        """The thread's messages from `oldest` on, oldest first (the parent included)."""
        found = await self._pages(team, "conversations.replies", channel=channel, ts=thread_ts)
        return [m for m in found if float(m.get("ts") or 0) >= oldest]

    async def channel(self, team: str, channel: str, oldest: float) -> list[dict[str, Any]]:
        """The channel's top-level messages since `oldest` and their threads' replies since then."""
        top = await self._pages(team, "conversations.history", channel=channel, oldest=f"{oldest:.6f}")
        found = list(top)
        for parent in top:
            if parent.get("reply_count"):
                replies = await self.thread(team, channel, str(parent["ts"]), oldest)
                found += [r for r in replies if r.get("ts") != parent.get("ts")]
        return sorted(found, key=lambda m: float(m.get("ts") or 0))

    async def _pages(self, team: str, method: str, **params: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(found) < MOST_READ:
            response = await self._call(team, method, limit=PAGE, cursor=cursor, **params)
            found += response.get("messages") or []
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        return found

    async def _call(self, team: str, method: str, **params: Any) -> Any:
        """One read within the workspace's Tier-3 window for `method` (shared by every replica); a
        429 waits its Retry-After and asks again."""
        window = Window(f"slack:{team}:{method}", TIER3_LIMIT, MINUTE)
        while True:
            await self.core.pacer.use((window,))
            try:
                return await self.client.api_call(method, http_verb="GET", params=_present(params))
            except SlackApiError as exc:
                if exc.response.status_code == 429:
                    await asyncio.sleep(retry_after(exc))
                    continue
                if exc.response.get("error") in GONE:
                    raise SourceUnreadable(GONE_MESSAGE) from None
                raise

    async def source(self, message: dict[str, Any]) -> SourceMessage:
        """A Slack message as a summary reads it: bots' messages and files named, not read."""
        ts = str(message.get("ts") or "")
        names = " ".join(f"[file: {f.get('name') or 'file'}]" for f in message.get("files") or ())
        if message.get("bot_id") or message.get("subtype") == "bot_message":
            who = "the bot" if message.get("bot_id") == self.me.bot_id else _bot_name(message)
            return SourceMessage(ts, who, f"[a message from {who}, not read] {names}".strip(), float(ts or 0))
        text = await to_model_text(str(message.get("text") or ""), self.me.user_id, self.people.name)
        author = await self.people.name(str(message.get("user") or "")) if message.get("user") else "someone"
        return SourceMessage(ts, author, f"{text} {names}".strip(), float(ts or 0))

    async def permalink(self, channel: str, message: SourceMessage) -> str:
        key = (channel, message.id)
        link = self._links.get(key)
        if link is None:
            response = await self.client.chat_getPermalink(channel=channel, message_ts=message.id)
            link = str(response.get("permalink") or "")
            self._links.put(key, link)
        return link


class ResponseSurface:
    """A summary shown only to the person who asked: written through the command's `response_url`,
    each write replacing the last. Slack takes five posts there, so progress takes at most three and
    the final text always has its own (`finish`)."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.uses = 0
        self.pending = ""  # the newest text not yet shown

    @property
    def limits(self) -> SurfaceLimits:
        # One message; edits a few seconds apart (each costs one of the five posts).
        return SurfaceLimits(max_chars=MAX_EPHEMERAL_CHARS, min_edit_interval=5.0, parts=False)

    async def post(self, text: str, *, complete: bool = False, controls: Controls | None = None) -> str:
        await self._show(text, final=complete)
        return "response"

    async def edit(self, message_id: str, text: str, *, controls: Controls | None = None) -> None:
        await self._show(text, final=False)

    async def delete(self, message_id: str) -> None:
        await self._send("", replace=True, delete=True)

    async def set_status(self, status: str | None) -> None:
        if status:
            await self._show(f"_{status}_", final=False)

    async def finish(self, *, affordable: bool = True) -> None:
        """The final text has landed: show it if the uses ran out while it grew."""
        if self.pending:
            await self._send(self.pending, replace=True)

    async def _show(self, text: str, *, final: bool) -> None:
        self.pending = text
        if final or self.uses < RESPONSE_USES - 2:
            await self._send(text, replace=self.uses > 0)

    async def _send(self, text: str, *, replace: bool, delete: bool = False) -> None:
        self.uses += 1
        self.pending = ""
        if delete:
            await self.respond(delete_original=True)
            return
        await self.respond(
            response_type="ephemeral", replace_original=replace, **markdown_reply(to_slack_markdown(text))
        )


class SlackSummaries:
    """The shortcut and the command, for one workspace."""

    def __init__(self, core: Core, reader: SlackReader, make_surface: MakeSurface) -> None:
        self.core = core
        self.reader = reader
        self.make_surface = make_surface

    async def shortcut(self, payload: dict[str, Any], respond: Respond) -> None:
        """"Summarize thread" on a message: its thread, summarised in the thread."""
        message = payload.get("message") or {}
        team = str((payload.get("team") or {}).get("id") or "")
        channel = str((payload.get("channel") or {}).get("id") or "")
        thread_ts = str(message.get("thread_ts") or message.get("ts") or "")
        user_id = str((payload.get("user") or {}).get("id") or "")
        if not (channel and thread_ts and user_id):
            return
        surface = self.make_surface(Place(team, channel, thread_ts, user_id, thread_ts))

        async def read() -> list[SourceMessage]:
            return [await self.reader.source(m) for m in await self.reader.thread(team, channel, thread_ts)]

        async def tell(text: str) -> None:  # a refusal or a failure: for the asker alone
            await respond(response_type="ephemeral", **markdown_reply(text))

        self.core.summarize(SummaryAsk(
            ConversationKey(PLATFORM, team, channel, thread_ts), await self._author(user_id), surface, THREAD,
            read=read, link=lambda m: self.reader.permalink(channel, m), tell=tell,
        ))

    async def command(self, command: dict[str, Any], respond: Respond) -> None:
        """`/summarize [WINDOW]`: the channel's window, for the asker's eyes only."""
        team = str(command.get("team_id") or "")
        channel = str(command.get("channel_id") or "")
        user_id = str(command.get("user_id") or "")
        try:
            window = parse_window(str(command.get("text") or ""), time.time())
        except BadWindow as bad:
            await respond(response_type="ephemeral", **markdown_reply(str(bad)))
            return
        surface = ResponseSurface(respond)

        async def read() -> list[SourceMessage]:
            found = await self.reader.channel(team, channel, window.oldest)
            return [await self.reader.source(m) for m in found]

        self.core.summarize(SummaryAsk(
            ConversationKey(PLATFORM, team, channel, ""), await self._author(user_id), surface, CHANNEL,
            read=read, link=lambda m: self.reader.permalink(channel, m), window=window.words,
        ))

    async def _author(self, user_id: str) -> Author:
        return Author(user_id, await self.reader.people.name(user_id))


def _present(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _bot_name(message: dict[str, Any]) -> str:
    profile = message.get("bot_profile") or {}
    return str(profile.get("name") or message.get("username") or "a bot")
