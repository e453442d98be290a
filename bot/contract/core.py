"""What the core offers a platform (`Core`), and what a platform adapter is (`Adapter`).

An adapter takes a `Core`, not the concrete engine: these few calls are all a
platform may use, so a new platform (or a test) can stand in for either side.
See docs/architecture.md, "The contract".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bot.contract.budgets import Leasing, Pacing
from bot.contract.commands import Command, CommandLimits
from bot.contract.summaries import SummaryAsk
from bot.contract.surface import (
    Attachment,
    Author,
    ChannelScope,
    ConversationKey,
    FetchFile,
    ReplySurface,
    Sender,
    Turn,
)

if TYPE_CHECKING:
    from aiohttp import web



# Feedback on a finished answer (`Core.feedback`): the two votes a press carries, and the
# optional reason form a 👎 opens, worded and bounded once for every platform.
VOTE_UP, VOTE_DOWN = "up", "down"
REASON_TITLE = "What went wrong?"
REASON_LABEL = "Optional: what would have been better?"
REASON_MAX_CHARS = 1000


@dataclass(frozen=True)
class Pressed:
    """What the core says to a button press: whether it did something, and what to tell the
    person who pressed it, only them (`message`, Markdown; empty: nothing to say)."""

    done: bool
    message: str = ""
    ask_reason: bool = False  # open the 👎 reason form (once per person per answer)


# Whether the actor administers the channel: a bool, or the platform call that says so,
# made only when it matters (the actor is not the person answered).
AdminCheck = bool | Callable[[], Awaitable[bool]]


class Core(Protocol):
    """The core as a platform sees it (`bot.engine.Engine` implements it)."""

    @property
    def pacer(self) -> Pacing:
        """The platforms' shared rate budgets (Redis-backed, across replicas)."""
        ...

    @property
    def leases(self) -> Leasing:
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

    def summarize(self, ask: SummaryAsk) -> asyncio.Task[Any]:
        """Summarise messages (a thread, a channel's window, the conversation kept) onto
        `ask.surface` in the background, as an answer streams: the asker's limits and the
        channel's persona apply, and Stop ends it."""
        ...

    async def knows(self, conversation: ConversationKey) -> bool:
        """Whether the store keeps this conversation (the bot is part of it)."""
        ...

    async def note(
        self, conversation: ConversationKey, author: Author, text: str, message_id: str, *,
        attachments: Sequence[Attachment] = (), fetch_file: FetchFile | None = None,
    ) -> bool:
        """Keep a message the bot does not answer as context of a conversation it keeps, with
        its files read as a question's are (`fetch_file` gets their bytes)."""
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

    async def stop(self, answer_id: str, actor: Author, *, can_admin: AdminCheck) -> Pressed:
        """Stop the answer `answer_id` while it streams (its Stop button, the console's Ctrl-C).

        Only the person it answers may, or someone the platform says administers the
        channel (`can_admin`, asked only for someone else); anyone else is refused with
        a message for them alone. The text so far stays, marked stopped, and is stored as
        such; the Stop button goes.
        """
        ...

    async def edited(self, turn: Turn) -> bool:
        """A person edited a message: `turn` carries its id (`message_id`), the new text, and a
        surface for an answer. The question being answered now, or the last one answered, is
        answered again in place (the same messages, edited); another kept message takes the
        new text. The core claims the edit by `turn.event_id` (one per edit: the message id and
        the edit's time) and checks the conversation is kept. False: not a message the store
        keeps, or an edit already handled."""
        ...

    async def deleted(self, conversation: ConversationKey, message_id: str) -> bool:
        """A person deleted a message: it leaves the stored history (idempotent: a retry or
        another replica removing it again changes nothing, so no claim is needed)."""
        ...

    async def approve(self, approval_id: str, actor: Author, approved: bool) -> Pressed:
        """An Approve (`approved`) or Deny press on a tool call waiting for its asker
        (`Controls.approval`): only the asker's counts; anyone else gets a message for them alone."""
        ...

    async def feedback(self, answer_id: str, actor: Author, value: str, *, reason: str = "") -> Pressed:
        """Record `actor`'s 👍 ("up") or 👎 ("down") on a finished answer, replacing their earlier
        one; `reason` (a 👎's, from a modal) is kept with it. The message is for them alone."""
        ...

    async def context(self, conversation: ConversationKey) -> dict[str, str]:
        """What the platform said about a conversation (`remember_context`); {} if nothing or
        Redis cannot say."""
        ...

    async def remember_context(self, conversation: ConversationKey, fields: dict[str, str]) -> None:
        """Keep facts about a conversation for later turns (as long as its history)."""
        ...

    async def suggested_prompts(self, scope: ChannelScope) -> list[str]:
        """The prompts to suggest in a channel: its persona's preset's (the default's otherwise)."""
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
        (see `bot.ops.inflight`); None when it cannot be reached."""
        return None
