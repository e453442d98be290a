"""Slack's AI app surface: the assistant panel (docs/slack.md, "The assistant panel").

When the app enables the assistant view, a person opens a thread with it from the panel:

- `assistant_thread_started`: greet in the thread and offer the persona's suggested prompts
  (`assistant.threads.setSuggestedPrompts`); remember the thread, and the channel the
  person is looking at, in the conversation's context (`Core.remember_context`);
- `assistant_thread_context_changed`: remember the channel they look at now;
- the first question titles the thread (`assistant.threads.setTitle`), and every answer
  gives the model the looked-at channel's name, topic and purpose (`Turn.context`).

The messages themselves arrive as DM messages in that thread and are answered like any
DM (`events.Intake`), with the same personas, pacing and limits; the status while the
model works is the panel's own (`assistant.threads.setStatus`, in `surface`).
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.surface import PLATFORM
from bot.contract import ConversationKey, Core

log = logging.getLogger(__name__)

GREETING = "Hi! How can I help? Ask me anything, or pick a suggestion below."
MAX_PROMPTS = 4  # Slack shows up to four
TITLE_CHARS = 80
ASSISTANT, TITLED, LOOKING_AT = "assistant", "titled", "context_channel"
LOOKING_AT_TEXT = "context_text"  # what the model is told of that channel, read when it changes


def thread_of(event: dict[str, Any], team: str) -> tuple[ConversationKey, str] | None:
    """The conversation of an assistant thread event, and the channel the person looks at."""
    thread = event.get("assistant_thread") or {}
    channel, ts = str(thread.get("channel_id") or ""), str(thread.get("thread_ts") or "")
    if not channel or not ts:
        return None
    context = thread.get("context") or {}
    team_id = team or str(context.get("team_id") or "")
    return ConversationKey(PLATFORM, team_id, channel, ts), str(context.get("channel_id") or "")


class AssistantThreads:
    def __init__(self, engine: Core, client: AsyncWebClient) -> None:
        self.engine = engine
        self.client = client

    async def started(self, event: dict[str, Any], team: str) -> None:
        found = thread_of(event, team)
        if found is None:
            return
        conversation, looking_at = found
        if not await self.engine.claim(PLATFORM, f"{conversation.workspace}:{conversation.channel}:"
                                                 f"{conversation.thread}:assistant_started"):
            return
        fields = {ASSISTANT: "1", **await self._looking_at(looking_at)}
        await self.engine.remember_context(conversation, fields)
        channel, thread_ts = conversation.channel, conversation.thread
        try:
            await self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, markdown_text=GREETING)
        except Exception as exc:
            log.warning("could not greet in an assistant thread: %s", exc)
        prompts = (await self.engine.suggested_prompts(conversation.channel_scope))[:MAX_PROMPTS]
        if prompts:
            try:
                await self.client.assistant_threads_setSuggestedPrompts(
                    channel_id=channel, thread_ts=thread_ts,
                    prompts=[{"title": p, "message": p} for p in prompts],
                )
            except Exception as exc:
                log.warning("could not set the suggested prompts: %s", exc)

    async def context_changed(self, event: dict[str, Any], team: str) -> None:
        found = thread_of(event, team)
        if found is not None:
            conversation, looking_at = found
            await self.engine.remember_context(conversation, await self._looking_at(looking_at))

    async def prepare(self, conversation: ConversationKey, question: str) -> str:
        """Before answering a message in a DM thread: title an assistant thread from its first
        question, and say which channel the person looks at. Returns the model's context."""
        known = await self.engine.context(conversation)
        if not known.get(ASSISTANT):
            return ""
        if not known.get(TITLED):
            title = " ".join(question.split())[:TITLE_CHARS] or "New chat"
            try:
                await self.client.assistant_threads_setTitle(
                    channel_id=conversation.channel, thread_ts=conversation.thread, title=title
                )
                await self.engine.remember_context(conversation, {TITLED: "1"})
            except Exception as exc:
                log.warning("could not title an assistant thread: %s", exc)
        return known.get(LOOKING_AT_TEXT, "")

    async def _looking_at(self, channel_id: str) -> dict[str, str]:
        """The context fields for the channel a person looks at: described once, when the
        person opens the thread or turns to another channel, not on every question."""
        described = await self._describe(channel_id) if channel_id else ""
        return {LOOKING_AT: channel_id, LOOKING_AT_TEXT: described}

    async def _describe(self, channel_id: str) -> str:
        try:
            info = (await self.client.conversations_info(channel=channel_id)).get("channel") or {}
        except Exception as exc:  # no access to that channel: answer without it
            log.info("could not read the channel the person looks at: %s", exc)
            return ""
        lines = [f"The person is looking at the Slack channel #{info.get('name') or channel_id}."]
        for what in ("topic", "purpose"):
            value = str((info.get(what) or {}).get("value") or "").strip()
            if value:
                lines.append(f"Its {what}: {value}")
        return "\n".join(lines)
