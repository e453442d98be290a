"""Helpers for core tests: people, conversation keys and turns on a recording surface."""

from __future__ import annotations

from bot.contract import Author, ConversationKey, Turn
from tests.support.surfaces import RecordingSurface

ALICE = Author("U1", "Alice")
BOB = Author("U2", "Bob")


def conversation(thread: str = "t1", channel: str = "C1") -> ConversationKey:
    return ConversationKey("test", "W1", channel, thread)


def turn(
    text: str, *, thread: str = "t1", channel: str = "C1", author: Author = ALICE,
    surface: RecordingSurface | None = None, message_id: str = "",
) -> Turn:
    return Turn(
        conversation(thread, channel), author, text, message_id=message_id or f"msg-{text[:10]}",
        surface=surface or RecordingSurface(),
    )
