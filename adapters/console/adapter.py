"""The console platform: a terminal REPL, or a pipe (a line in, an answer out)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markdown import Markdown
from rich.text import Text

from adapters.console.files import LocalFiles
from adapters.console.repl import TerminalChat
from adapters.console.surfaces import PlainSurface
from bot.contract import Adapter, Author, ConversationKey, Core, Turn, parse
from bot.contract.summaries import CONVERSATION, SummaryAsk

PLATFORM = "console"
USER = Author(id="console", name="you")

# The chat's own commands and keys; the core's (`/persona`, `/forget`) follow in `/help`.
HELP = """\
**In this chat**
- `/help`: this list
- `/attach PATH`: send a file with your next message
- `/stop`: stop the answer being written (Ctrl-C does the same)
- `/forget`: clear this conversation's memory
- `/summarize`: a summary of this conversation so far
- `/persona help`: this channel's persona (its prompt, model and settings)

**Keys** (at the prompt)
- **Ctrl-C**: stop the answer being written; at the prompt, press it twice to quit
- **Ctrl-D**: quit
- **← →**, **Ctrl-A** / **Ctrl-E**: move in the line; **↑ ↓**: earlier lines; **Ctrl-R**: search them
- **Ctrl-L**: clear the screen"""


class ConsoleAdapter(Adapter):
    """The terminal as a platform: one conversation, typed in and answered in place (or, from a
    pipe, a line in and an answer out). `finished()` is the chat's exit status."""

    name = PLATFORM

    def __init__(
        self, core: Core, conversation: ConversationKey, *, persona: str | None = None,
        out: TextIO | None = None, unreachable: str = "the model API could not be reached",
        history: Path | None = None, log: str = "",
    ) -> None:
        self.core = core
        self.conversation = conversation
        self.persona = persona
        self.out = out or sys.stdout
        self.unreachable = unreachable  # what the operator should check when the model is away
        self.history = history  # the prompt's history file (None: this chat only)
        self.log = log  # where the log goes, said in /help
        self.files = LocalFiles()
        self.answering = False
        self._chat: asyncio.Task[int] | None = None

    @property
    def connected(self) -> bool:
        return self._chat is not None and not self._chat.done()

    async def start(self) -> None:
        live = sys.stdin.isatty() and self.out.isatty()
        self._chat = asyncio.ensure_future(self._terminal() if live else self._pipe())

    async def stop(self) -> None:
        if self._chat is not None and not self._chat.done():
            self._chat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._chat

    async def finished(self) -> int:
        assert self._chat is not None, "start() first"
        return await self._chat

    async def command(self, text: str) -> str:
        """A line starting with `/`: the chat's own commands here, the rest for the core."""
        word = text.split(maxsplit=1)[0].lower()
        if word in ("/help", "/?"):
            help_text = HELP + (f"\n\nThe log goes to `{self.log}`." if self.log else "")
            return help_text
        if word == "/attach":
            return self.files.attach(text)
        if word == "/stop":
            return "Nothing to stop: no answer is being written."
        if word in ("/summarize", "/summarise"):
            return await self.summarize()
        # The same parser as Slack's text commands: typed objects cross into the core.
        return await self.core.command(
            parse(text), scope=self.conversation.channel_scope, conversation=self.conversation,
            actor=USER, can_admin=True,
        )

    async def summarize(self) -> str:
        """The conversation so far, summarised (from what the core keeps of it)."""
        surface = PlainSurface()
        await self.core.summarize(SummaryAsk(self.conversation, USER, surface, CONVERSATION))
        return surface.text()

    async def _terminal(self) -> int:
        console = Console(file=self.out, highlight=False)
        if self.persona:
            console.print(Markdown(as_markdown(await self._use_persona())))
        console.print(Text(
            f"Channel '{self.conversation.channel}', conversation '{self.conversation.thread}'. "
            "/help lists the commands and keys; Ctrl-D quits.", style="dim"))

        async def command(text: str) -> str:
            return as_markdown(await self.command(text))

        chat = TerminalChat(
            self.core, self.conversation, USER, console, command=command, files=self.files,
            history=self.history, unreachable=self.unreachable,
        )
        return await chat.run()

    async def _pipe(self) -> int:
        out = self.out
        if self.persona:
            out.write(await self._use_persona() + "\n")
        count = 0
        while line := await asyncio.to_thread(sys.stdin.readline):
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                out.write(await self.command(text) + "\n")
                out.flush()
                continue
            count += 1
            surface = PlainSurface()
            await self.core.submit(Turn(
                self.conversation, USER, text, f"u{count}", surface=surface,
                attachments=self.files.take(), fetch_file=self.files.fetch,
            ))
            out.write(surface.text() + "\n")
            out.flush()
        return 0

    async def _use_persona(self) -> str:
        return await self.command(f"/persona use {self.persona}")


def conversation_for(channel: str, thread: str | None) -> ConversationKey:
    """The console's conversation: a channel (the persona's scope) and a thread (new by default)."""
    return ConversationKey(PLATFORM, "local", channel, thread or uuid.uuid4().hex[:8])


def as_markdown(reply: str) -> str:
    """A command's reply, written for chat apps (a line each, `•` items), as Markdown a terminal
    renders with the same line breaks: items become a list, other lines paragraphs."""
    blocks: list[str] = []
    for line in reply.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        item = stripped.startswith(("• ", "- "))
        text = "- " + stripped[2:] if item else stripped
        if item and blocks and blocks[-1].startswith("- "):
            blocks[-1] += "\n" + text
        else:
            blocks.append(text)
    return "\n\n".join(blocks)
