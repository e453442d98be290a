"""What a platform gives the core: conversations, turns and reply surfaces.

An adapter turns a platform event into a `Turn` and hands the engine a
`ReplySurface`: the few writes the core needs to show an answer on that
platform. The core never sees a platform object, and an adapter never sees
the model stream or a Redis key.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, runtime_checkable

from bot.contract.budgets import Window


@dataclass(frozen=True)
class ConversationKey:
    """Where a conversation lives: one Slack thread, one Discord reply chain or DM."""

    platform: str
    workspace: str
    channel: str
    thread: str

    @property
    def channel_scope(self) -> ChannelScope:
        return ChannelScope(self.platform, self.workspace, self.channel)

    def __str__(self) -> str:
        return f"{self.platform}:{self.workspace}:{self.channel}:{self.thread}"


@dataclass(frozen=True)
class ChannelScope:
    """What a persona belongs to: one channel of one workspace (or one DM)."""

    platform: str
    workspace: str
    channel: str

    def __str__(self) -> str:
        return f"{self.platform}:{self.workspace}:{self.channel}"


class Sender(Enum):
    """Who wrote an incoming message, as far as the core's choice to heed it goes.

    The adapter tells which (only it can recognise its own bot user, a webhook or a
    system notice); the core decides what each is worth (`Core.heeds`).
    """

    ME = "me"  # the bot itself: its own echoes
    PERSON = "person"
    BOT = "bot"  # another bot, an integration or a webhook
    SYSTEM = "system"  # joins, pins, topic changes: the platform speaking


@dataclass(frozen=True)
class Author:
    id: str
    name: str


@dataclass(frozen=True)
class Attachment:
    """A file on a message, as the platform describes it; the core decides what to read.

    `ref` names the file on its platform (a Slack file id, a Discord
    `channel:message:attachment` id, a local path in the console): the turn's
    `fetch_file` gets its bytes from it, now or when a later turn replays it.
    `text` is what the core extracted (the history keeps it, bounded); `note` says
    why the core left the file out. An adapter fills only name, mime, size and ref, and
    `unavailable` when the platform already says the file cannot be fetched, and why.
    """

    name: str
    mime: str = ""
    size: int = 0  # bytes, as the platform says (0: unknown)
    ref: str = ""
    text: str | None = None
    note: str = ""
    unavailable: str = ""  # said to people: "it was deleted"


class FetchFailed(Exception):
    """A file could not be fetched; `reason` is said to people ("it was deleted")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Fetch the file named by a `ref`, at most `limit` bytes (raise FetchFailed past it, or
# when the platform refuses, the file is gone, or the download times out).
FetchFile = Callable[[str, int], Awaitable[bytes]]


@dataclass(frozen=True)
class HistoryEntry:
    """One role-tagged message of a conversation, as kept in the store."""

    role: str  # "user" | "assistant"
    content: str
    author: str = ""  # display name; empty for the bot itself
    msg_id: str = ""
    ts: float = 0.0
    interrupted: bool = False
    stopped: bool = False  # an answer the person stopped part-way (`Core.stop`)
    more_ids: tuple[str, ...] = ()  # an answer's messages after `msg_id`, when it took several
    attachments: tuple[Attachment, ...] = ()
    tools: str = ""  # an answer's tool calls and their (cut) results, for a follow-up (bot/tools/loop.py)


@dataclass(frozen=True)
class SurfaceLimits:
    """What a platform allows, so the core can pace and split for it.

    The windows are the platform's budgets (`bot.delivery.pacing.Window`), named by scope
    so that every live answer and every process writing there shares them:
    `post_windows` for new messages, `edit_windows` for edits, and where a
    surface has more to pay for one message, `start_windows` (extra budgets of
    its first write, e.g. Slack's chat.startStream) and `finish_windows`
    (the budgets of `FinishingSurface.finish`, e.g. chat.stopStream).
    """

    max_chars: int
    min_edit_interval: float = 1.0
    post_windows: tuple[Window, ...] = ()
    edit_windows: tuple[Window, ...] = ()
    start_windows: tuple[Window, ...] = ()
    finish_windows: tuple[Window, ...] = ()
    # The surface shows an answer's `Controls` (buttons) on its messages.
    controls: bool = False
    # When edits cannot keep an answer moving, its text may go on in messages of their own
    # (`bot.delivery.pacing`, rule 5); False: one message per answer whatever the load.
    parts: bool = False


@dataclass(frozen=True)
class Controls:
    """The buttons an answer's message carries: Stop while it streams, feedback once finished.

    Only the answer's last message carries them; a surface whose `SurfaceLimits.controls`
    is False is never handed any. `answer_id` is what a press names (`Core.stop`,
    `Core.feedback`).
    """

    answer_id: str
    stop: bool = False
    feedback: bool = False
    # Approve and Deny of a tool call (bot/tools/approval.py); `answer_id` is then the approval's
    # id, which a press names (`Core.approve`).
    approval: bool = False


@dataclass(frozen=True)
class StepView:
    """One tool call, for a surface that shows the steps apart from the answer's text
    (`StepSurface`; Slack's task cards in a native stream)."""

    id: str  # the call's id: the same card moves from in progress to its end
    title: str
    status: str  # "in_progress", "complete" or "error"
    details: str = ""  # the arguments, in short
    output: str = ""  # a line of the result
    line: str = ""  # the step as a line of text, where it must be shown in the text after all


@runtime_checkable
class StepSurface(Protocol):
    """A surface that can show an answer's tool steps beside its text instead of inside it."""

    def show_steps(self, steps: Sequence[StepView]) -> bool:
        """Take the steps as they are now; the surface's next write to the answer carries them
        (it makes no write of its own; where it must post plainly after all, it puts their
        `line`s at the top of the text itself). False: it cannot, the text must carry them."""
        ...


class SurfaceRateLimited(Exception):
    """Raised by a surface write that the platform answered with 429."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after:.1f}s")
        self.retry_after = retry_after


class ReplySurface(Protocol):
    """How an answer is shown on one platform, in one conversation.

    Text handed to `post` and `edit` is the model's Markdown; converting it to
    the platform's format is the surface's job. `max_chars` must leave room
    for that conversion. Writes may raise `SurfaceRateLimited` or any other
    exception; the core retries the final text until it lands.
    """

    @property
    def limits(self) -> SurfaceLimits: ...

    async def post(self, text: str, *, complete: bool = False, controls: Controls | None = None) -> str:
        """Send a new message in the conversation; return its platform id.

        `complete`: the text is final, no edit will follow (a surface that streams
        natively posts it plainly instead). `controls`: the buttons it carries (None: none).
        """
        ...

    async def edit(self, message_id: str, text: str, *, controls: Controls | None = None) -> None:
        """Replace the text (and the buttons: None removes them) of a message this surface posted."""
        ...

    async def delete(self, message_id: str) -> None:
        """Remove a message this surface posted (a partial one whose final text was reposted)."""
        ...

    async def set_status(self, status: str | None) -> None:
        """Show that the bot is working ("is thinking…", typing); None clears it."""
        ...


@runtime_checkable
class FinishingSurface(Protocol):
    """A surface with something to close once the final text has landed (e.g. a native stream).

    `affordable=False`: the budget of the closing call (`SurfaceLimits.finish_windows`)
    is spent; close it another way (Slack: a plain chat.update instead of chat.stopStream).
    """

    async def finish(self, *, affordable: bool = True) -> None: ...


Backfill = Callable[[], Awaitable[list[HistoryEntry]]]


@dataclass
class Turn:
    """One incoming message, ready for the engine.

    `backfill` lets the engine ask the platform for the conversation so far
    when the store has none of it (TTL passed, Redis flushed, bot added
    mid-thread). It returns earlier messages only, oldest first.

    `event_id` is what the adapter claimed the event by (`Core.claim`): unique on
    its platform, and the same for every retry and replica that delivers it. It
    is often not `message_id` (a Slack ts is unique per channel only).

    `attachments` are the message's files; `fetch_file` gets any file of this
    conversation by its `ref` (this message's, or an earlier one's being replayed).
    """

    conversation: ConversationKey
    author: Author
    text: str
    message_id: str
    surface: ReplySurface
    backfill: Backfill | None = None
    received_at: float = field(default_factory=time.monotonic)
    event_id: str = ""
    # What the answer's controls name (`Controls.answer_id`, `Core.stop`); unique per answer.
    answer_id: str = field(default_factory=lambda: secrets.token_hex(6))
    # What the platform says the person is looking at (Slack's assistant panel: the channel's
    # name and topic), given to the model with the persona's prompt; "" for nothing.
    context: str = ""
    attachments: tuple[Attachment, ...] = ()
    fetch_file: FetchFile | None = None
    # An edit's time on the platform (Unix seconds; 0: unknown): of two edits of one message,
    # the later one wins whatever order they arrive in (`bot.conversations.edits`).
    edited_at: float = 0.0
