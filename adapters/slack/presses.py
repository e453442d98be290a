"""Presses on an answer's buttons in Slack (`block_actions`): Stop, and 👍/👎, and the
optional reason a 👎 asks for in a modal (`view_submission`).

Bolt has verified the payload (the signature in HTTP mode; Socket Mode's connection is
the app's own) and the handler has acknowledged it before anything here runs, well
inside Slack's 3 s. Who pressed is the payload's `user`, which Slack signs; the answer
is the button's value, which the bot itself wrote into the message. Each press is
claimed once (`Core.claim`), so a redelivery does nothing twice. A refusal is told to
the presser alone, through the payload's `response_url` (ephemeral).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.controls import feedback_value
from adapters.slack.surface import PLATFORM
from bot.contract import REASON_LABEL, REASON_MAX_CHARS, REASON_TITLE, VOTE_DOWN, Author, Core

log = logging.getLogger(__name__)

Respond = Callable[..., Awaitable[Any]]

REASON_VIEW = "chatbot_feedback_reason"
REASON_BLOCK, REASON_INPUT = "reason", "reason_text"


def reason_view(answer_id: str) -> dict[str, Any]:
    """The modal a 👎 opens: one optional line of why. The answer id rides in private_metadata,
    which Slack hands back unchanged with the submission."""
    return {
        "type": "modal",
        "callback_id": REASON_VIEW,
        "private_metadata": answer_id,
        "title": {"type": "plain_text", "text": REASON_TITLE},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Skip"},
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "optional": True,
                "label": {"type": "plain_text", "text": REASON_LABEL},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "max_length": REASON_MAX_CHARS,
                },
            }
        ],
    }


def press_id(body: dict[str, Any]) -> str:
    """The press's id for `Core.claim`: team, user and the action's own timestamp."""
    action = (body.get("actions") or [{}])[0]
    team = str((body.get("team") or {}).get("id") or "")
    user = str((body.get("user") or {}).get("id") or "")
    return f"{team}:{user}:action:{action.get('action_ts', '')}"


def action_value(body: dict[str, Any]) -> str:
    actions = body.get("actions") or []
    return str(actions[0].get("value") or "") if actions and isinstance(actions[0], dict) else ""


class Actions:
    def __init__(
        self, engine: Core, client: AsyncWebClient, can_admin: Callable[[str], Awaitable[bool]]
    ) -> None:
        self.engine = engine
        self.client = client
        self.can_admin = can_admin  # asked only when the presser is not the person answered

    @staticmethod
    def _actor(body: dict[str, Any]) -> Author | None:
        user = body.get("user") or {}
        user_id = str(user.get("id") or "")
        return Author(user_id, str(user.get("name") or user_id)) if user_id else None

    async def stop(self, body: dict[str, Any], respond: Respond) -> None:
        answer_id = action_value(body)
        if not answer_id or not await self.engine.claim(PLATFORM, press_id(body)):
            return
        actor = self._actor(body)
        if actor is None:
            return
        pressed = await self.engine.stop(answer_id, actor, can_admin=lambda: self.can_admin(actor.id))
        if pressed.message:
            await _tell(respond, pressed.message)

    async def approval(self, body: dict[str, Any], respond: Respond, *, approved: bool) -> None:
        """Approve or Deny of a tool call: only the asker's press counts (the core decides)."""
        approval_id = action_value(body)
        actor = self._actor(body)
        if not approval_id or actor is None or not await self.engine.claim(PLATFORM, press_id(body)):
            return
        pressed = await self.engine.approve(approval_id, actor, approved)
        if pressed.message:
            await _tell(respond, pressed.message)

    async def feedback(self, body: dict[str, Any], respond: Respond) -> None:
        """👍 is thanked for; 👎 opens the reason modal (the trigger is good for 3 s, so this
        runs right after the ack, before anything slower)."""
        vote = feedback_value(action_value(body))
        actor = self._actor(body)
        if vote is None or actor is None or not await self.engine.claim(PLATFORM, press_id(body)):
            return
        value, answer_id = vote
        pressed = await self.engine.feedback(answer_id, actor, value)
        if pressed.ask_reason and body.get("trigger_id"):
            try:
                await self.client.views_open(trigger_id=str(body["trigger_id"]), view=reason_view(answer_id))
                return
            except Exception as exc:  # the vote is in; the reason is optional
                log.warning("could not open the feedback reason modal: %s", exc)
        if pressed.message:
            await _tell(respond, pressed.message)

    async def reason(self, body: dict[str, Any]) -> None:
        """The 👎 modal was sent: keep its reason with the vote."""
        view = body.get("view") or {}
        actor = self._actor(body)
        answer_id = str(view.get("private_metadata") or "")
        if actor is None or not answer_id:
            return
        team = (body.get("team") or {}).get("id", "")
        submission = f"{team}:{actor.id}:view:{view.get('id')}:{view.get('hash')}"
        if not await self.engine.claim(PLATFORM, submission):
            return
        values = ((view.get("state") or {}).get("values") or {}).get(REASON_BLOCK) or {}
        reason = str((values.get(REASON_INPUT) or {}).get("value") or "")
        if reason.strip():
            await self.engine.feedback(answer_id, actor, VOTE_DOWN, reason=reason)


async def _tell(respond: Respond, text: str) -> None:
    try:
        await respond(response_type="ephemeral", replace_original=False, text=text)
    except Exception as exc:
        log.warning("could not answer a button press: %s", exc)
