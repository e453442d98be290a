"""Where an answer is written: collected for a pipe, rendered in place on a terminal."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text

from bot.contract import Controls, SurfaceLimits

STOPPED = "(stopped)"
# A line of the tool steps section the core writes at the top of an answer (bot/tools/loop.py
# `Step.line`): italic, ending in "…" while it runs and "… done" (or another state) after.
STEP_LINE = re.compile(r"_(?P<step>[^\n]*…(?: [a-z ]+)?)_")


def split_steps(text: str) -> tuple[list[str], str]:
    """The tool steps at the top of an answer, as plain lines, and the answer after them."""
    head, blank, rest = text.partition("\n\n")
    steps = [STEP_LINE.fullmatch(line) for line in head.split("\n")] if blank else [None]
    if not all(steps):
        return [], text
    return [m["step"].replace("\\_", "_") for m in steps if m], rest


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

    def close(self, instead: RenderableType | None = None) -> None:
        """Leave what is shown; or, with `instead`, erase the live part and print that."""
        if self.started:
            self.live.transient = instead is not None
            self.live.stop()
            self.started = False
        if instead is not None:
            self.console.print(instead, soft_wrap=True)


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
        # The tool steps: one dim line each above the answer, not italic Markdown inside it.
        steps, text = split_steps("\n\n".join(self.messages))
        parts: list[RenderableType] = [Text(step, style="dim") for step in steps]
        if text.strip():
            parts.append(Markdown(text.strip()))
        if note is not None:
            parts.append(note)
        return Group(*parts)
