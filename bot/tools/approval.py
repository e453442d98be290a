"""Approval: a tool call that changes the world waits for the asker's Approve.

The call is shown in the thread, where everyone there sees what is asked (the tool's title and
its arguments), with Approve and Deny (`Controls(approval=True)`; the adapters draw them). Only
the asker's press counts; anyone else is told so privately. A press reaching another replica is
relayed over the Stop channel (`bot.delivery.stops`), its answer id prefixed with `RELAY`. No
press within TOOL_APPROVAL_TIMEOUT is a Deny. The message then says what was decided, without
buttons.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from bot.clock import Clock
from bot.contract import Author, Controls, Pressed, ReplySurface
from bot.delivery.stops import StopRequest
from bot.ops import metrics
from bot.tools.servers import ToolInfo

log = logging.getLogger(__name__)

RELAY = "tool-approval:"  # the answer id of a relayed press: RELAY + approval id + ":yes" | ":no"
APPROVED, DENIED, TIMED_OUT = "approved", "denied", "timeout"


def only_asker(name: str) -> str:
    return f"Only the person who asked ({name}) can approve this."


@dataclass
class _Pending:
    asker: Author
    decision: asyncio.Future[str]


def _arguments_block(arguments: dict[str, Any]) -> str:
    shown = json.dumps(arguments, ensure_ascii=False, indent=1)
    if len(shown) > 1500:
        shown = shown[:1500] + "\n…"
    return "```\n" + shown.replace("```", "'''") + "\n```"


class Approvals:
    """The calls waiting for their asker's press, in this process."""

    def __init__(self, clock: Clock, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self._pending: dict[str, _Pending] = {}

    async def ask(
        self, surface: ReplySurface, asker: Author, tool: ToolInfo, arguments: dict[str, Any]
    ) -> str:
        """Show the call with Approve/Deny and wait: `APPROVED`, `DENIED` or `TIMED_OUT`."""
        approval_id = secrets.token_hex(8)
        pending = _Pending(asker, asyncio.get_running_loop().create_future())
        self._pending[approval_id] = pending
        minutes = max(1, round(self.timeout / 60))
        text = (
            f"**{asker.name}, may I do this?** {tool.title} (`{tool.qualified}`)\n"
            f"{_arguments_block(arguments)}\n"
            f"_Only {asker.name} can approve; no answer within {minutes} min is a Deny._"
        )
        message_id = ""
        try:
            message_id = await surface.post(text, controls=Controls(approval_id, approval=True))
            async with asyncio.timeout(self.clock.real(self.timeout)):
                decision = await pending.decision
        except TimeoutError:
            decision = TIMED_OUT
        except asyncio.CancelledError:  # the answer was stopped (or the bot stops): no more buttons
            if message_id:
                await asyncio.shield(self._decided(surface, message_id, text, "The answer was stopped."))
            raise
        finally:
            self._pending.pop(approval_id, None)
        metrics.tool_approval(decision)
        said = {APPROVED: f"Approved by {asker.name}.", DENIED: f"Denied by {asker.name}.",
                TIMED_OUT: f"No answer within {minutes} min: denied."}[decision]
        await self._decided(surface, message_id, text, said)
        return decision

    @staticmethod
    async def _decided(surface: ReplySurface, message_id: str, text: str, said: str) -> None:
        try:
            await surface.edit(message_id, f"{text}\n\n_{said}_", controls=None)
        except Exception as exc:  # the decision stands; only the buttons stay
            log.warning("could not mark an approval as decided: %s", exc)

    def press(self, approval_id: str, actor_id: str, approved: bool) -> Pressed | None:
        """A press here: its verdict, or None when the call does not wait in this process."""
        pending = self._pending.get(approval_id)
        if pending is None:
            return None
        if actor_id != pending.asker.id:
            return Pressed(False, only_asker(pending.asker.name))
        if not pending.decision.done():
            pending.decision.set_result(APPROVED if approved else DENIED)
        return Pressed(True)

    async def decide(self, request: StopRequest) -> Pressed | None:
        """A press relayed by another replica (its answer id starts with `RELAY`)."""
        approval_id, _, answer = request.answer_id.removeprefix(RELAY).partition(":")
        return self.press(approval_id, request.actor_id, answer == "yes")


def relayed(approval_id: str, approved: bool) -> str:
    return f"{RELAY}{approval_id}:{'yes' if approved else 'no'}"
