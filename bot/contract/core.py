"""What the core offers a platform (`Core`), and what a platform adapter is (`Adapter`).

An adapter takes a `Core`, not the concrete engine: these few calls are all a
platform may use, so a new platform (or a test) can stand in for either side.
See docs/architecture.md, "The contract".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from bot.contract.commands import Command, CommandLimits
from bot.contract.surface import Author, ChannelScope, ConversationKey, ReplySurface, Sender, Turn

if TYPE_CHECKING:
    from aiohttp import web

    from bot.leases import Leases
    from bot.pacing import Pacer


class Core(Protocol):
    """The core as a platform sees it (`bot.engine.Engine` implements it)."""

    @property
    def pacer(self) -> Pacer:
        """The platforms' shared rate budgets (Redis-backed, across replicas)."""
        ...

    @property
    def leases(self) -> Leases:
        """Names one process may hold at a time across replicas (a Discord shard)."""
        ...

    @property
    def accepting(self) -> bool:
        """False once shutting down: take no new events."""
        ...

    @property
    def command_limits(self) -> CommandLimits:
        """The limits of command arguments; a UI that validates input advertises these."""
        ...

    def heeds(self, platform: str, sender: Sender) -> bool:
        """Whether a message from `sender` may be answered or noted at all: never the bot's
        own or the platform's notices; other bots only where the settings allow them."""
        ...

    async def claim(self, platform: str, event_id: str) -> bool:
        """True the first time `(platform, event_id)` is claimed, across retries and replicas.

        Every event an adapter acts on (a message answered or noted, a slash command)
        is claimed first; `event_id` is the platform's id for it, the same whichever
        delivery carries it.
        """
        ...

    def submit(self, turn: Turn) -> asyncio.Task[Any]:
        """Answer `turn` in the background."""
        ...

    async def knows(self, conversation: ConversationKey) -> bool:
        """Whether the store keeps this conversation (the bot is part of it)."""
        ...

    async def note(self, conversation: ConversationKey, author: Author, text: str, message_id: str) -> bool:
        """Keep a message the bot does not answer as context of a conversation it keeps."""
        ...

    async def command(
        self,
        command: Command | str,
        *,
        scope: ChannelScope,
        conversation: ConversationKey | None,
        actor: Author,
        can_admin: bool,
        who_may: str = "",
    ) -> str:
        """Run a command for `actor`; return the Markdown reply (a typed line is parsed first)."""
        ...

    def listed_persona_admin(self, user_id: str) -> bool:
        """May change personas by the settings alone (PERSONA_OPEN, PERSONA_ADMINS)."""
        ...

    def preset_names(self) -> list[str]:
        """The persona presets, for a UI that offers them (autocomplete)."""
        ...


class Adapter:
    """One platform, run by the service: connect, turn events into calls on a `Core`, disconnect.

    `name`, `connected`, `start` and `stop` are required. The rest are optional
    and declared here as no-ops, so the service calls them on every adapter
    instead of looking them up by name.
    """

    name: str = ""
    # An aiohttp app this adapter serves (the health routes are mounted on it); None: none.
    web_app: web.Application | None = None
    # Whether `surface_for` reaches messages posted earlier (by a process that crashed since).
    reaches_earlier_messages: bool = False

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def part_checks(self) -> dict[str, Callable[[], bool]]:
        """Readiness per part of the connection, known once started (Discord: per shard);
        `/readyz` shows each as "<name> <part>"."""
        return {}

    async def stop_intake(self) -> None:
        """Stop taking new events; keep the connections answers in flight write through."""


    async def surface_for(self, conversation: ConversationKey, message_id: str) -> ReplySurface | None:
        """A surface onto an earlier message of the bot's, to mark an answer a crash cut short
        (see `bot.inflight`); None when it cannot be reached."""
        return None
