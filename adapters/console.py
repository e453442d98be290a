"""`python -m bot chat`: the same core, personas and streaming, in a terminal.

On a terminal the answer streams in place; with stdin from a pipe or file,
each line is one message and each answer is printed once complete, which
makes the chat scriptable.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass, field
from typing import TextIO

from bot.engine import Engine
from bot.surface import Author, ChannelScope, ConversationKey, SurfaceLimits, Turn

PLATFORM = "console"
USER = Author(id="console", name="you")


@dataclass
class ConsoleSurface:
    """Prints an answer. Live mode writes each new piece as it arrives."""

    out: TextIO
    live: bool
    messages: list[str] = field(default_factory=list)
    status_shown: bool = False

    @property
    def limits(self) -> SurfaceLimits:
        return SurfaceLimits(max_chars=1_000_000, min_edit_interval=0.05)

    async def post(self, text: str, *, complete: bool = False) -> str:
        if self.live and self.status_shown:
            self.out.write("\r\x1b[2K")  # the answer replaces the status line
            self.status_shown = False
        self.messages.append("")
        await self.edit(str(len(self.messages) - 1), text)
        return str(len(self.messages) - 1)

    async def edit(self, message_id: str, text: str) -> None:
        index = int(message_id)
        before = self.messages[index]
        self.messages[index] = text
        if self.live:
            if text.startswith(before):
                self.out.write(text[len(before):])
            else:  # rewritten (e.g. an interruption note): show the whole text again
                self.out.write("\n" + text)
            self.out.flush()

    async def delete(self, message_id: str) -> None:
        """Printed text stays; the console has no budget, so the core never reposts here."""

    async def set_status(self, status: str | None) -> None:
        if self.live and status and not self.messages:
            self.out.write(f"\x1b[2m({status})\x1b[0m\r")
            self.out.flush()
            self.status_shown = True

    def text(self) -> str:
        return "\n\n".join(self.messages)


async def _read_line(prompt: str, live: bool) -> str | None:
    """Read one line without blocking the event loop (answers may still be streaming)."""

    def read() -> str | None:
        if live:
            try:
                return input(prompt)
            except EOFError:
                return None
        line = sys.stdin.readline()
        return line if line else None

    return await asyncio.to_thread(read)


async def chat(engine: Engine, channel: str, thread: str | None, persona: str | None) -> int:
    live = sys.stdin.isatty()
    out = sys.stdout
    conversation = ConversationKey(PLATFORM, "local", channel, thread or uuid.uuid4().hex[:8])
    scope = conversation.channel_scope
    if persona:
        out.write(await _command(engine, f"persona use {persona}", scope, conversation) + "\n")
    if live:
        out.write(
            f"Chatting in channel '{channel}', conversation '{conversation.thread}' "
            "(/persona help, /forget; Ctrl-D to quit)\n"
        )
    count = 0
    while (line := await _read_line("> ", live)) is not None:
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            out.write(await _command(engine, text, scope, conversation) + "\n")
            out.flush()
            continue
        count += 1
        surface = ConsoleSurface(out, live)
        turn = Turn(conversation, USER, text, message_id=f"u{count}", surface=surface)
        await engine.answer(turn)
        out.write("\n" if live else surface.text() + "\n")
        out.flush()
    return 0


async def _command(engine: Engine, text: str, scope: ChannelScope, conversation: ConversationKey) -> str:
    return await engine.command(text, scope=scope, conversation=conversation, actor=USER, can_admin=True)
