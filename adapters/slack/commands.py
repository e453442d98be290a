"""`/persona`, and forgetting a thread, the Slack way.

Slash commands are acknowledged at once and answered ephemerally through their
`response_url`; the core runs the command and words the reply. Who may change a
persona: workspace admins and owners (users.info), the users in PERSONA_ADMINS, or
everyone when PERSONA_OPEN=true.

Slack slash commands do not know which thread they were typed in, so forgetting a
thread is done from the thread itself: the message shortcut "Forget this thread"
(the ⋯ menu of any message in it), or a mention whose text is just `forget`.
`/persona forget` explains that.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.intake import PLATFORM, Incoming
from adapters.slack.mentions import defuse
from adapters.slack.people import People
from bot.contract import Author, ChannelScope, ConversationKey, Core, parse
from bot.contract.commands import Forget

log = logging.getLogger(__name__)

FORGET_SHORTCUT = "forget_thread"
FORGET_HINT = (
    "Slack does not tell a slash command which thread it was typed in, so forgetting "
    "works from the thread itself:\n"
    "• open the ⋯ menu of any message in the thread and choose *Forget this thread*, or\n"
    "• mention me in the thread with just `forget`."
)


def markdown_reply(text: str) -> dict[str, Any]:
    """An ephemeral reply rendered from Markdown (text stays as the notification fallback)."""
    # A persona's prompt shown back must not broadcast either; the user mentions in these
    # replies are the bot's own (who may change a persona).
    text = defuse(text, allowed_users=None)
    return {"text": text, "blocks": [{"type": "markdown", "text": text}]}


class Commands:
    def __init__(
        self,
        engine: Core,
        client: AsyncWebClient,
        people: People,
        persona_admins: frozenset[str],
    ) -> None:
        self.engine = engine
        self.client = client
        self.people = people
        self.persona_admins = persona_admins  # named in refusals

    @property
    def who_may(self) -> str:
        who = "workspace admins and owners"
        if self.persona_admins:
            who += " and " + ", ".join(f"<@{u}>" for u in sorted(self.persona_admins))
        return who

    async def can_admin(self, user_id: str) -> bool:
        # The engine adds PERSONA_ADMINS and PERSONA_OPEN; asked first, they save a users.info call.
        return self.engine.listed_persona_admin(user_id) or await self.people.is_admin(user_id)

    async def persona(self, command: dict[str, Any]) -> str:
        """Run `/persona …`; returns the reply for the person who typed it."""
        text = str(command.get("text") or "").strip()
        if text.lower() in ("forget", "/forget"):
            return FORGET_HINT
        user_id = str(command.get("user_id") or "")
        scope = ChannelScope(
            PLATFORM, str(command.get("team_id") or ""), str(command.get("channel_id") or "")
        )
        actor = Author(user_id, await self.people.name(user_id))
        return await self.engine.command(
            parse(f"persona {text}"),  # the core's parser: typed objects, not text, cross over
            scope=scope,
            conversation=None,
            actor=actor,
            can_admin=await self.can_admin(user_id),
            who_may=self.who_may,
        )

    async def forget(self, conversation: ConversationKey, user_id: str) -> str:
        actor = Author(user_id, await self.people.name(user_id))
        return await self.engine.command(
            Forget(),
            scope=conversation.channel_scope,
            conversation=conversation,
            actor=actor,
            can_admin=await self.can_admin(user_id),
            who_may=self.who_may,
        )

    async def forget_shortcut(self, payload: dict[str, Any]) -> str:
        """The "Forget this thread" message shortcut: the thread of the chosen message."""
        message = payload.get("message") or {}
        team = str((payload.get("team") or {}).get("id") or "")
        channel = str((payload.get("channel") or {}).get("id") or "")
        thread = str(message.get("thread_ts") or message.get("ts") or "")
        user_id = str((payload.get("user") or {}).get("id") or "")
        return await self.forget(ConversationKey(PLATFORM, team, channel, thread), user_id)

    async def forget_by_mention(self, message: Incoming, conversation: ConversationKey) -> None:
        """`@bot forget` in a thread: answer only the person who asked."""
        reply = await self.forget(conversation, message.user)
        try:
            await self.client.chat_postEphemeral(
                channel=message.channel,
                user=message.user,
                thread_ts=conversation.thread,
                **markdown_reply(reply),
            )
        except Exception as exc:
            log.warning("could not confirm a forget in %s: %s", message.channel, exc)
