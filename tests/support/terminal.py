"""Drive a command in a real pseudo-terminal, as a person at a keyboard would.

    async with Terminal([sys.executable, "-m", "bot", "chat"], env) as term:
        await term.expect("> ")
        term.type("hello\\r")
        term.type("\\x03")     # Ctrl-C: the kernel's line discipline turns it into SIGINT
        assert await term.exit_code() == 0
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import struct
import termios
from pathlib import Path

import pyte

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def plain(raw: str) -> str:
    """The text without colours and cursor moves."""
    return ANSI.sub("", raw)


class Terminal:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, rows: int = 40, cols: int = 100):
        self.argv, self.env, self.cwd = argv, env, cwd
        self.rows, self.cols = rows, cols
        self.raw = ""
        self.mark = 0  # `expect` looks from here on
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self.pid = 0
        self.fd = -1

    async def __aenter__(self) -> Terminal:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", self.rows, self.cols, 0, 0))
                os.chdir(self.cwd)
                os.execvpe(self.argv[0], self.argv, self.env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        asyncio.get_running_loop().add_reader(fd, self._readable)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.pid and not self.closed.is_set():
            os.kill(self.pid, 9)
            await asyncio.wait_for(self.closed.wait(), 10)
        self._stop_reading()
        os.close(self.fd)
        if self.pid:
            await asyncio.to_thread(os.waitpid, self.pid, 0)

    def _stop_reading(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)  # safe to repeat

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed its side
            data = b""
        if not data:
            self._stop_reading()
            self.closed.set()
        self.raw += data.decode(errors="replace")
        self._changed.set()

    @property
    def text(self) -> str:
        return plain(self.raw)

    def screen(self) -> list[str]:
        """What a person sees now, lines scrolled off the top included: the output played on a
        VT100 screen of the terminal's size (redraws in place leave only their last state), a
        line wrapped at the terminal's width read as one."""
        screen = pyte.HistoryScreen(self.cols, self.rows, history=10_000)
        pyte.Stream(screen).feed(self.raw)
        top = ["".join(line[x].data for x in range(self.cols)) for line in screen.history.top]
        lines: list[str] = []
        wrapped = False  # the row before filled the width: this one goes on its line
        for row in top + screen.display:
            lines[-1:] = [lines[-1] + row.rstrip()] if wrapped and lines else [*lines[-1:], row.rstrip()]
            wrapped = len(row.rstrip()) == self.cols
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    async def expect(self, needle: str, within: float | None = None) -> str:
        """Wait until `needle` shows after the mark; move the mark past it; return what came before.
        By default 15 s, and 30 s for the first thing the program shows: starting Python and
        importing the bot takes seconds of CPU, which a machine busy with the rest of the suite
        may give slowly."""
        within = within if within is not None else 30.0 if self.mark == 0 else 15.0

        async def seen() -> str:
            while True:
                text = self.text
                at = text.find(needle, self.mark)
                if at >= 0:
                    before = text[self.mark:at]
                    self.mark = at + len(needle)
                    return before
                if self.closed.is_set():
                    raise AssertionError(f"exited before {needle!r} showed; output:\n{text}")
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(seen(), within)
        except TimeoutError:
            raise AssertionError(f"{needle!r} did not show within {within}s; output:\n{self.text}") from None

    async def exit_code(self, within: float = 15.0) -> int:
        await asyncio.wait_for(self.closed.wait(), within)
        _, status = await asyncio.to_thread(os.waitpid, self.pid, 0)
        self.pid = 0
        return os.waitstatus_to_exitcode(status)
