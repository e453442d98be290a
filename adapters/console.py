"""`python -m bot chat`: the same core, personas and streaming, in a terminal.

On a terminal the answer is rendered as Markdown and streams in place, and
Ctrl-C behaves as in other REPLs: it stops the answer being written (the part
shown stays, marked stopped, and is kept in the conversation as stopped, as a
Stop button does in Slack and Discord; typing `/stop` and Enter does the same),
at the prompt it says how to quit, and a second Ctrl-C (or Ctrl-D) quits. With
stdin from a pipe or file, each line is one message and each answer is printed
once complete, as plain text: scriptable.

It is a platform like the others (`ConsoleAdapter` is an `Adapter` over a `Core`),
the smallest one: a new platform starts from this shape (docs/architecture.md,
"The contract").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import termios
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text

from bot.attachments import guess_mime
from bot.contract import (
    Adapter,
    Attachment,
    Author,
    Controls,
    ConversationKey,
    Core,
    FetchFailed,
    SurfaceLimits,
    Turn,
    parse,
)
from bot.logs import redirect_logging

PLATFORM = "console"
USER = Author(id="console", name="you")
QUIT_HINT = "(To quit, press Ctrl-C again or Ctrl-D.)"
STOPPED = "(stopped)"


# ---- /attach PATH: local files on the next message ----------------------------------------------


class LocalFiles:
    """Files attached with `/attach PATH`, sent with the next message; read when the core asks."""

    def __init__(self) -> None:
        self.pending: list[Attachment] = []

    def attach(self, line: str) -> str:
        """`/attach PATH`: the reply to show."""
        path = Path(line.split(maxsplit=1)[1].strip() if " " in line.strip() else "").expanduser()
        if not str(path) or str(path) == ".":
            return "Give a file: `/attach PATH` (it goes with your next message)."
        if not path.is_file():
            return f"There is no file `{path}`."
        size = path.stat().st_size
        self.pending.append(Attachment(path.name, guess_mime(path.name), size, str(path.resolve())))
        names = ", ".join(f"`{a.name}`" for a in self.pending)
        return f"Attached {names}: it goes with your next message."

    def take(self) -> tuple[Attachment, ...]:
        taken, self.pending = tuple(self.pending), []
        return taken

    @staticmethod
    async def fetch(ref: str, limit: int) -> bytes:
        """A `bot.contract.FetchFile` over local paths."""
        return await asyncio.to_thread(_read, Path(ref), limit)


def _read(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as opened:
            data = opened.read(limit + 1)
    except OSError as error:
        raise FetchFailed(error.strerror or "it cannot be read") from None
    if len(data) > limit:
        raise FetchFailed(f"it is over {limit:,} bytes")
    return data


def is_attach(text: str) -> bool:
    return text.split(maxsplit=1)[0].lower() == "/attach"


# ---- pipe mode: plain text, one answer per line of input -------------------------------------


@dataclass
class PlainSurface:
    """Collects an answer; the chat prints it once complete."""

    messages: list[str] = field(default_factory=list)

    @property
    def limits(self) -> SurfaceLimits:
        return SurfaceLimits(max_chars=1_000_000, min_edit_interval=0.05)

    async def post(self, text: str, *, complete: bool = False, controls: Controls | None = None) -> str:
        self.messages.append(text)
        return str(len(self.messages) - 1)

    async def edit(self, message_id: str, text: str, *, controls: Controls | None = None) -> None:
        self.messages[int(message_id)] = text

    async def delete(self, message_id: str) -> None:
        """Nothing printed yet; the console has no budget, so the core never reposts here."""

    async def set_status(self, status: str | None) -> None:
        return None

    def text(self) -> str:
        return "\n\n".join(self.messages)


# ---- terminal mode: Markdown, streamed in place ------------------------------------------------


class MarkdownStream:
    """Shows a growing Markdown text in place.

    Re-rendering the whole text each time keeps the Markdown right (a closing `**`
    or code fence changes what came before), but a terminal cannot redraw lines
    that scrolled off the top. So only the last screenful stays live; lines above
    it are printed for good once they leave it.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = Live(
            Text(""), console=console, auto_refresh=False, transient=False,
            vertical_overflow="visible", redirect_stdout=False, redirect_stderr=False,
        )
        self.committed = 0  # rendered lines printed for good
        self.started = False

    def _lines(self, renderable: RenderableType) -> list[Text]:
        options = self.console.options.update(width=self.console.width)
        lines = self.console.render_lines(renderable, options, pad=False)
        return [Text.assemble(*((seg.text, seg.style or "") for seg in line)) for line in lines]

    def show(self, renderable: RenderableType) -> None:
        if not self.started:
            self.live.start()
            self.started = True
        lines = self._lines(renderable)
        window = max(4, self.console.height - 2)
        stable = len(lines) - window
        if stable > self.committed:
            self.live.console.print(Group(*lines[self.committed:stable]))
            self.committed = stable
        self.live.update(Group(*lines[self.committed:]), refresh=True)

    def close(self) -> None:
        if self.started:
            self.live.stop()
            self.started = False


@dataclass
class TerminalSurface:
    """Renders an answer as Markdown while it streams; `stop()` freezes what is shown."""

    stream: MarkdownStream
    messages: list[str] = field(default_factory=list)
    stopped: bool = False

    @property
    def limits(self) -> SurfaceLimits:
        return SurfaceLimits(max_chars=1_000_000, min_edit_interval=0.05)

    async def post(self, text: str, *, complete: bool = False, controls: Controls | None = None) -> str:
        self.messages.append("")
        await self.edit(str(len(self.messages) - 1), text)
        return str(len(self.messages) - 1)

    async def edit(self, message_id: str, text: str, *, controls: Controls | None = None) -> None:
        if self.stopped:
            return  # the engine's own interruption note would say "restarting": not here
        self.messages[int(message_id)] = text
        self.stream.show(self._renderable())

    async def delete(self, message_id: str) -> None:
        """Printed text stays; the console has no budget, so the core never reposts here."""

    async def set_status(self, status: str | None) -> None:
        if status and not self.messages and not self.stopped:
            self.stream.show(Text(f"({status})", style="dim"))

    def stop(self) -> None:
        """Ctrl-C: what is shown stays, marked stopped; later writes are ignored."""
        self.stopped = True
        self.stream.show(self._renderable(Text(STOPPED, style="dim italic")))

    def _renderable(self, note: Text | None = None) -> RenderableType:
        text = "\n\n".join(self.messages).strip()
        parts: list[RenderableType] = [Markdown(text)] if text else []
        if note is not None:
            parts.append(note)
        return Group(*parts)


class _ConsoleLog:
    """A stream for the log handler: each record on its own dim line, never glued to an answer."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def write(self, text: str) -> int:
        if text.strip():
            self.console.print(Text(text.rstrip("\n"), style="dim"), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        return None


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


class LineReader:
    """Reads lines from a terminal in canonical mode without a thread, so Ctrl-C can interrupt
    a wait at the prompt at once (a thread blocked in input() holds the process until Enter)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.eof = False
        self.waiter: asyncio.Future[None] | None = None
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except OSError:
            data = b""
        if data:
            self.buffer += data
        else:
            self.eof = True  # Ctrl-D at the start of a line
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def readline(self) -> str | None:
        while b"\n" not in self.buffer:
            if self.eof:
                return None
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace")

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)


class TerminalChat:
    def __init__(self, core: Core, conversation: ConversationKey, console: Console, unreachable: str) -> None:
        self.core = core
        self.conversation = conversation
        self.console = console
        self.unreachable = unreachable
        self.reader = LineReader(sys.stdin.fileno())
        self.armed = False  # a Ctrl-C was just pressed: the next one at the prompt quits
        self.quit = asyncio.Event()
        self.answering: asyncio.Task[Any] | None = None
        self.answer_id = ""  # the answer being written, for `Core.stop`
        self.surface: TerminalSurface | None = None
        self.typed: list[str] = []  # lines typed while an answer streamed, for the prompt after it
        self._stopping: set[asyncio.Task[None]] = set()
        self.count = 0
        self.files = LocalFiles()

    def on_interrupt(self) -> None:
        answering = self.answering is not None and not self.answering.done()
        if answering and self.surface is not None and not self.surface.stopped:
            self.stop_answer()
            self.armed = True
            return
        if self.armed:
            self.quit.set()
            return
        self.armed = True
        self.console.print()
        self.console.print(Text(QUIT_HINT, style="dim"))
        self._prompt()

    def stop_answer(self) -> None:
        """Ctrl-C or /stop: the engine stops the answer and keeps it, marked stopped."""
        answering, surface = self.answering, self.surface
        if answering is None or answering.done() or surface is None or surface.stopped:
            return
        surface.stop()

        async def stop() -> None:
            pressed = await self.core.stop(self.answer_id, USER, can_admin=True)
            if not pressed.done:
                answering.cancel()  # not streaming yet (waiting for its turn): nothing to keep

        task = asyncio.ensure_future(stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _prompt(self) -> None:
        self.console.print(Text("> ", style="bold cyan"), end="")
        self.console.file.flush()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.on_interrupt)
        try:
            while True:
                self._prompt()
                line = await self._next_line()
                if line is None:
                    self.console.print()
                    return 0
                text = line.strip()
                if not text:
                    continue
                self.armed = False
                if is_attach(text):
                    self.console.print(Markdown(self.files.attach(text)))
                    continue
                if text.startswith("/"):
                    reply = await _command(self.core, text, self.conversation)
                    self.console.print(Markdown(reply))
                    continue
                await self._answer(text)
                if self.quit.is_set():
                    return 0
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            self.reader.close()

    async def _next_line(self) -> str | None:
        if self.typed:
            return self.typed.pop(0)
        reading = asyncio.ensure_future(self.reader.readline())
        quitting = asyncio.ensure_future(self.quit.wait())
        await asyncio.wait({reading, quitting}, return_when=asyncio.FIRST_COMPLETED)
        quitting.cancel()
        if not reading.done():
            reading.cancel()
            return None
        return reading.result()

    async def _answer(self, text: str) -> None:
        self.count += 1
        stream = MarkdownStream(self.console)
        self.surface = surface = TerminalSurface(stream)
        turn = Turn(
            self.conversation, USER, text, message_id=f"u{self.count}", surface=surface,
            attachments=self.files.take(), fetch_file=self.files.fetch,
        )
        self.answer_id = turn.answer_id
        self.answering = task = self.core.submit(turn)
        try:
            with _no_echo(self.reader.fd):
                await self._while_answering(task)
        finally:
            stream.close()
            self.answering = None
        if not task.cancelled() and task.exception() is None:
            self._explain(task.result())

    async def _while_answering(self, task: asyncio.Task[Any]) -> None:
        """Wait for the answer; a `/stop` line typed meanwhile stops it, other lines wait."""
        while not task.done():
            reading = asyncio.ensure_future(self.reader.readline())
            await asyncio.wait({task, reading}, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                reading.cancel()
                break
            line = reading.result()
            if line is None:
                break  # Ctrl-D: the answer finishes, then the chat ends at the prompt
            if line.strip() == "/stop":
                self.stop_answer()
            elif line.strip():
                self.typed.append(line)
        await asyncio.wait({task})

    def _explain(self, outcome: Any) -> None:
        """The engine's messages are meant for anyone in a channel; here the operator is the
        reader, so name what to fix."""
        if outcome.error == "unavailable" and not (outcome.reply and outcome.reply.has_text):
            self.console.print(Text(f"({self.unreachable})", style="dim"))


class ConsoleAdapter(Adapter):
    """The terminal as a platform: one conversation, typed in and answered in place (or, from a
    pipe, a line in and an answer out). `finished()` is the chat's exit status."""

    name = PLATFORM

    def __init__(
        self, core: Core, conversation: ConversationKey, *, persona: str | None = None,
        out: TextIO | None = None, unreachable: str = "the model API could not be reached",
    ) -> None:
        self.core = core
        self.conversation = conversation
        self.persona = persona
        self.out = out or sys.stdout
        self.unreachable = unreachable  # what the operator should check when the model is away
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

    async def _terminal(self) -> int:
        console = Console(file=self.out, highlight=False)
        _log_to(console)
        if self.persona:
            console.print(Markdown(await self._use_persona()))
        console.print(Text(
            f"Chatting in channel '{self.conversation.channel}', conversation '{self.conversation.thread}' "
            "(/persona help, /forget, /attach PATH; Ctrl-C stops an answer; Ctrl-D quits)", style="dim"))
        return await TerminalChat(self.core, self.conversation, console, self.unreachable).run()

    async def _pipe(self) -> int:
        out = self.out
        if self.persona:
            out.write(await self._use_persona() + "\n")
        count = 0
        files = LocalFiles()
        while line := await asyncio.to_thread(sys.stdin.readline):
            text = line.strip()
            if not text:
                continue
            if is_attach(text):
                out.write(files.attach(text) + "\n")
                out.flush()
                continue
            if text.startswith("/"):
                out.write(await _command(self.core, text, self.conversation) + "\n")
                out.flush()
                continue
            count += 1
            surface = PlainSurface()
            await self.core.submit(Turn(
                self.conversation, USER, text, f"u{count}", surface=surface,
                attachments=files.take(), fetch_file=files.fetch,
            ))
            out.write(surface.text() + "\n")
            out.flush()
        return 0


    async def _use_persona(self) -> str:
        return await _command(self.core, f"persona use {self.persona}", self.conversation)


def conversation_for(channel: str, thread: str | None) -> ConversationKey:
    """The console's conversation: a channel (the persona's scope) and a thread (new by default)."""
    return ConversationKey(PLATFORM, "local", channel, thread or uuid.uuid4().hex[:8])


def _log_to(console: Console) -> None:
    """The log on the chat's console, each record on its own line; same level, format and
    redaction as set up at start (`bot.logs`)."""
    redirect_logging(_ConsoleLog(console))  # type: ignore[arg-type]
    if "LOG_LEVEL" not in os.environ:
        # The answer itself says what went wrong; the per-answer log line would repeat it.
        logging.getLogger("bot.answer").setLevel(logging.ERROR)


async def _command(core: Core, text: str, conversation: ConversationKey) -> str:
    # The same parser as Slack's text commands: typed objects cross into the core.
    return await core.command(
        parse(text), scope=conversation.channel_scope, conversation=conversation, actor=USER, can_admin=True
    )
