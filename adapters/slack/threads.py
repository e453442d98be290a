"""Slack's thread is the source of truth for a conversation; Redis is the working copy.

`ThreadReader` reads a thread with `conversations.replies` (all pages) and turns it
into history entries for the engine: the bot's own messages become `assistant`
turns, everyone else's `user` turns with their display name.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.files import SlackFiles
from adapters.slack.formatting import to_model_text
from adapters.slack.people import People
from bot.contract import Backfill, HistoryEntry

log = logging.getLogger(__name__)

PAGE = 200
MAX_MESSAGES = 1000  # a longer thread is trimmed to its latest part by the engine anyway
# Thread replies that are not addressed to the bot are the most common channel
# traffic; remember for a short while that the bot is not in a thread, so each of
# them does not cost a conversations.replies call.
ABSENT_TTL = 60.0
MAX_ABSENT = 5000
# Message subtypes that are still something a person (or bot) said.
SPOKEN_SUBTYPES = frozenset({None, "thread_broadcast", "file_share", "bot_message", "me_message"})


@dataclass(frozen=True)
class Identity:
    """The bot as Slack knows it (from auth.test)."""

    user_id: str
    bot_id: str


class ThreadReader:
    def __init__(
        self, client: AsyncWebClient, people: People, me: Identity, files: SlackFiles | None = None
    ) -> None:
        self._client = client
        self._files = files
        self._people = people
        self._me = me
        self._absent: dict[tuple[str, str], float] = {}

    async def messages(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The thread's messages, oldest first (the parent included)."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(found) < MAX_MESSAGES:
            response = await self._client.conversations_replies(
                channel=channel, ts=thread_ts, limit=PAGE, cursor=cursor
            )
            found.extend(response.get("messages") or [])
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        return found

    def is_mine(self, message: dict[str, Any]) -> bool:
        return message.get("user") == self._me.user_id or (
            bool(message.get("bot_id")) and message.get("bot_id") == self._me.bot_id
        )

    async def bot_is_in(self, channel: str, thread_ts: str) -> bool:
        """Has the bot written in this thread? (For threads whose history Redis lost.)"""
        key = (channel, thread_ts)
        if self._absent.get(key, 0.0) > time.monotonic():
            return False
        try:
            present = any(self.is_mine(m) for m in await self.messages(channel, thread_ts))
        except Exception as exc:
            log.warning("could not read thread %s in %s: %s", thread_ts, channel, exc)
            return False
        if not present:
            if len(self._absent) >= MAX_ABSENT:
                self._absent.clear()
            self._absent[key] = time.monotonic() + ABSENT_TTL
        return present

    def forget_absence(self, channel: str, thread_ts: str) -> None:
        """The bot is answering in this thread now."""
        self._absent.pop((channel, thread_ts), None)

    def backfill(self, channel: str, thread_ts: str, before_ts: str) -> Backfill:
        """A `Turn.backfill` that rebuilds the thread up to (not including) `before_ts`."""

        async def rebuild() -> list[HistoryEntry]:
            earlier = [
                m for m in await self.messages(channel, thread_ts) if float(m.get("ts", 0)) < float(before_ts)
            ]
            return [e for e in [await self.entry(m) for m in earlier] if e is not None]

        return rebuild

    async def entry(self, message: dict[str, Any]) -> HistoryEntry | None:
        if message.get("subtype") not in SPOKEN_SUBTYPES:
            return None
        ts = str(message.get("ts", ""))
        text = str(message.get("text") or "")
        if self.is_mine(message):
            return HistoryEntry("assistant", text, msg_id=ts, ts=float(ts or 0))
        content = await to_model_text(text, self._me.user_id, self._people.name)
        files = self._files.attachments(message.get("files") or ()) if self._files else ()
        if not content and not files:
            return None
        return HistoryEntry(
            "user", content, author=await self._author(message), msg_id=ts, ts=float(ts or 0),
            attachments=files,
        )

    async def _author(self, message: dict[str, Any]) -> str:
        if message.get("user"):
            return await self._people.name(str(message["user"]))
        profile = message.get("bot_profile") or {}
        return str(profile.get("name") or message.get("username") or "bot")
