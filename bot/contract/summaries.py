"""What a platform hands the core to summarise (`Core.summarize`): the messages to read, or
where to read them, and where the summary goes. See docs/architecture.md, "Summaries"."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bot.contract.surface import Author, ConversationKey, ReplySurface

# What is summarised, for the metrics' `kind` label: a small closed set.
THREAD, CHANNEL, CONVERSATION = "thread", "channel", "conversation"


@dataclass(frozen=True)
class SourceMessage:
    """One message a summary reads, as the platform gave it."""

    id: str  # the platform's message id (what `SummaryAsk.link` is asked about)
    author: str  # display name
    text: str  # files and bot messages named, not read ("[file: report.pdf]")
    ts: float  # seconds since the epoch: the order the messages are read in


# The messages to summarise, oldest first. Raising says they could not be read (the thread is gone,
# no access): the person is told in one line.
ReadMessages = Callable[[], Awaitable[Sequence[SourceMessage]]]
# A link to one message (a Slack permalink, a Discord jump URL); "" when there is none. Asked only
# for the messages a summary cites, so a platform call per link stays few (and cached there).
LinkTo = Callable[[SourceMessage], Awaitable[str]]


class SourceUnreadable(Exception):
    """The platform could not read the messages; `str(self)` is a line for the person."""


@dataclass(frozen=True)
class SummaryAsk:
    """A summary asked for by `author` in `conversation` (its persona and limits apply), written
    onto `surface` (a thread's reply, or a surface only the asker sees)."""

    conversation: ConversationKey
    author: Author
    surface: ReplySurface
    kind: str  # THREAD | CHANNEL | CONVERSATION
    read: ReadMessages | None = None  # None: the conversation as the store keeps it (the console)
    link: LinkTo | None = None
    window: str = ""  # what was read, in words ("the last 24 hours"), said when it is empty
    answer_id: str = ""  # the Stop button's id ("" : one is made)
    # Where a refusal or a failure to read is said (None: posted on `surface`): a thread's
    # summary tells the asker alone that the thread is gone, not the thread.
    tell: Callable[[str], Awaitable[None]] | None = None
