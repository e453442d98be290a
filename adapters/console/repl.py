"""The terminal chat: a prompt with line editing and history, answers streamed in place.

prompt_toolkit owns the terminal only while a line is typed (raw mode: arrows, Ctrl-R, Ctrl-L
are keys). While an answer streams the terminal is back in canonical mode with echo off: Ctrl-C
reaches the process as SIGINT and stops the answer, and lines typed meanwhile wait for the next
prompt, except `/stop`, which stops the answer as Ctrl-C does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import termios
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, cast

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.output import create_output
from prompt_toolkit.output.vt100 import Vt100_Output
from prompt_toolkit.styles import Style
from rich.console import Console
from rich.markdown import Markdown
from rich.text import Text

from adapters.console.files import LocalFiles
from adapters.console.surfaces import MarkdownStream, TerminalSurface
from bot.contract import Author, ConversationKey, Core, Turn

QUIT_HINT = "(To quit, press Ctrl-C again or Ctrl-D.)"
PROMPT_STYLE = Style.from_dict({"prompt": "bold ansicyan"})

# Answers a command line (`/persona …`, `/help`…) with the reply to show.
Command = Callable[[str], Awaitable[str]]


@contextlib.contextmanager
def _no_echo(fd: int) -> Iterator[None]:
    """While an answer streams, keys typed are not echoed into it (they wait as the next line)."""
    try:
        before = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    quiet = list(before)
    quiet[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, before)


class TypedAhead:
    """Lines typed while an answer streams, read without a thread (a thread blocked on the
    terminal would hold the process until Enter, and race prompt_toolkit for the keys)."""

    def __init__(self, fd: int, on_line: Callable[[str], None]) -> None:
        self.fd = fd
        self.on_line = on_line
        self.buffer = b""
        self.eof = False  # Ctrl-D at the start of a line: the chat ends after this answer

    def __enter__(self) -> TypedAhead:
        asyncio.get_running_loop().add_reader(self.fd, self._readable)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except OSError:
            data = b""
        if not data:
            self.eof = True
        self.buffer += data
        while b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            self.on_line(line.decode(errors="replace"))

    @property
    def partial(self) -> str:
        """What was typed after the last Enter: it starts the next prompt's line."""
        return self.buffer.decode(errors="replace")


class TerminalChat:
    def __init__(
        self, core: Core, conversation: ConversationKey, author: Author, console: Console, *,
        command: Command, files: LocalFiles, history: Path | None, unreachable: str,
    ) -> None:
        self.core = core
        self.conversation = conversation
        self.author = author
        self.console = console
        self.command = command
        self.files = files
        self.unreachable = unreachable
        output = create_output(cast(TextIO, console.file))
        if isinstance(output, Vt100_Output):
            # No cursor-position requests: nothing here needs them (no menus below the line),
            # and a terminal that does not answer would get a WARNING line in the chat.
            output.enable_cpr = False
        self.session: PromptSession[str] = PromptSession(
            history=_history(history), style=PROMPT_STYLE, output=output, enable_open_in_editor=False
        )
        self.answering: asyncio.Task[Any] | None = None
        self.answer_id = ""  # the answer being written, for `Core.stop`
        self.surface: TerminalSurface | None = None
        self.typed: list[str] = []  # lines typed while an answer streamed, for the prompts after it
        self.partial = ""  # a line begun while an answer streamed
        self.ended = False  # Ctrl-D while an answer streamed, or a second Ctrl-C
        self.armed = False  # a Ctrl-C was just pressed at the prompt: the next one quits
        self._stopping: set[asyncio.Task[None]] = set()
        self.count = 0

    async def run(self) -> int:
        # At the prompt Ctrl-C is a key (the terminal is raw); anywhere else it is SIGINT.
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.on_interrupt)
        try:
            while not self.ended:
                try:
                    line = await self._next_line()
                except KeyboardInterrupt:
                    self.on_interrupt()
                    continue
                except EOFError:
                    return 0
                self.armed = False
                text = line.strip()
                if not text:
                    continue
                if text.startswith("/"):
                    self.console.print(Markdown(await self.command(text)))
                    continue
                await self._answer(text)
            return 0
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    def on_interrupt(self) -> None:
        """Ctrl-C: stops the answer being written; else says how to quit, and quits if pressed
        again."""
        if self.answering is not None and not self.answering.done():
            self.stop_answer()
        elif self.armed:
            self.ended = True
            if self.session.app.is_running:  # pressed as the prompt came back, not yet raw
                self.session.app.exit(exception=EOFError)
        else:
            self.armed = True
            self.console.print(Text(QUIT_HINT, style="dim"))

    async def _next_line(self) -> str:
        if self.ended:
            raise EOFError
        if self.typed:
            line = self.typed.pop(0)
            self.console.print(Text("> ", style="bold cyan") + Text(line))
            self.session.history.append_string(line)
            return line
        default, self.partial = self.partial, ""
        return await self.session.prompt_async(
            [("class:prompt", "> ")], default=default, handle_sigint=False
        )

    # ---- one answer ----------------------------------------------------------------------

    async def _answer(self, text: str) -> None:
        self.count += 1
        stream = MarkdownStream(self.console)
        self.surface = surface = TerminalSurface(stream)
        turn = Turn(
            self.conversation, self.author, text, message_id=f"u{self.count}", surface=surface,
            attachments=self.files.take(), fetch_file=self.files.fetch,
        )
        self.answer_id = turn.answer_id
        self.answering = task = self.core.submit(turn)
        try:
            with _no_echo(0), TypedAhead(0, self._typed) as ahead:
                await asyncio.wait({task})
                self.partial, self.ended = ahead.partial, ahead.eof
        finally:
            explained = None
            if task.done() and not task.cancelled() and task.exception() is None:
                explained = self._explain(task.result())
            stream.close(explained)
            self.answering = None

    def _typed(self, line: str) -> None:
        if line.strip() == "/stop":
            self.stop_answer()
        elif line.strip():
            self.typed.append(line)

    def stop_answer(self) -> None:
        """Ctrl-C or /stop: the engine stops the answer and keeps it, marked stopped."""
        answering, surface = self.answering, self.surface
        if answering is None or answering.done() or surface is None or surface.stopped:
            return
        surface.stop()

        async def stop() -> None:
            pressed = await self.core.stop(self.answer_id, self.author, can_admin=True)
            if not pressed.done:
                answering.cancel()  # not streaming yet (waiting for its turn): nothing to keep

        task = asyncio.ensure_future(stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _explain(self, outcome: Any) -> Text | None:
        """The engine's messages are meant for anyone in a channel; here the operator is the
        reader: one line that also names what to fix, in place of the engine's."""
        reply = outcome.reply
        if outcome.error == "unavailable" and reply is not None and not reply.has_text and self.surface:
            said = " ".join(m.strip() for m in self.surface.messages if m.strip())
            return Text(f"{said} ({self.unreachable})".strip())
        return None


def _history(path: Path | None) -> FileHistory | InMemoryHistory:
    if path is None:
        return InMemoryHistory()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:
        return InMemoryHistory()  # a read-only home: history for this chat only
    return FileHistory(str(path))
