"""Presses on an answer's buttons in Slack (`block_actions`): Stop, and 👍/👎.

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

from adapters.slack.surface import PLATFORM
from bot.contract import Author, Core

log = logging.getLogger(__name__)

Respond = Callable[..., Awaitable[Any]]


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
    def __init__(self, engine: Core, can_admin: Callable[[str], Awaitable[bool]]) -> None:
        self.engine = engine
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


async def _tell(respond: Respond, text: str) -> None:
    try:
        await respond(response_type="ephemeral", replace_original=False, text=text)
    except Exception as exc:
        log.warning("could not answer a button press: %s", exc)
