"""The command line (`python -m bot ...`) as the tests run it: in this process (`run_cli`), or
as a real process (`cli_process`) where the process itself is part of what a test checks.

A real process costs a second or more of CPU before it does anything (it imports slack_bolt,
discord.py, aiohttp, httpx and redis afresh); in this process those imports are paid once.
Both give the command the same settings: the test's, over the environment without any
platform token or model key, and no `.env`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from bot.app.cli import main
from bot.ops.logs import teardown_logging
from tests.support.helpers import bot_process, clean_environ

TIMEOUT = 60.0  # seconds a command may take, either way


async def cli_process(args: Sequence[str], env: Mapping[str, str], stdin: str = "") -> tuple[int, str, str]:
    """`python -m bot ARGS` as a real process fed `stdin`: its exit status, stdout and stderr."""
    async with bot_process("-m", "bot", *args, env=env) as process:
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), TIMEOUT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def run_cli(args: Sequence[str], env: Mapping[str, str], stdin: str = "") -> tuple[int, str, str]:
    """`python -m bot ARGS` in this process, fed `stdin`: its exit status, stdout and stderr,
    as `cli_process` gives them.

    `main` runs on a thread of its own (it runs its own event loop with `asyncio.run`), while
    the test's loop goes on serving the fakes on this one. What is written from any thread but
    this one is the command's output; what this thread writes (the test, its fakes and their
    logs) goes where it went before. The streams, the logging set-up and the logger levels the
    command changes are put back afterwards. `run` installs no signal handlers off the main
    thread (bot/app/service.py), so in here it only serves to see it fail to start.
    """
    out, err = io.StringIO(), io.StringIO()
    here = threading.current_thread()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    environ = clean_environ() | dict(env)

    def settle(result: int | BaseException) -> None:
        if done.done():
            return  # timed out meanwhile
        if isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set_result(result)

    def command() -> None:
        result: int | BaseException
        try:
            result = main(list(args), environ)
        except SystemExit as exit_:  # argparse: --help, or arguments it refuses
            result = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        except BaseException as error:  # a bug: the test fails with it rather than a status 1
            result = error
        with contextlib.suppress(RuntimeError):  # the test's loop is gone: nobody waits anymore
            loop.call_soon_threadsafe(settle, result)

    streams = sys.stdin, sys.stdout, sys.stderr
    levels = _LogLevels.take()
    sys.stdin = io.StringIO(stdin)
    sys.stdout, sys.stderr = _Split(streams[1], out, here), _Split(streams[2], err, here)
    try:
        threading.Thread(target=command, name=f"cli {' '.join(args)}", daemon=True).start()
        code = await asyncio.wait_for(done, TIMEOUT)
    finally:
        sys.stdin, sys.stdout, sys.stderr = streams
        teardown_logging()  # the handler, record factory and secrets `setup_logging` installed
        levels.restore()
    return code, out.getvalue(), err.getvalue()


class _Split(io.TextIOBase):
    """sys.stdout or sys.stderr while the command runs: its threads write to `captured`, the
    test's thread (`home`) to the stream that was there before."""

    def __init__(self, before: TextIO, captured: io.StringIO, home: threading.Thread) -> None:
        self.before, self.captured, self.home = before, captured, home

    def _target(self) -> TextIO:
        return self.before if threading.current_thread() is self.home else self.captured

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return False  # a pipe, as for a real process run by the tests

    @property
    def encoding(self) -> str:
        return "utf-8"


@dataclass(frozen=True)
class _LogLevels:
    """The levels of the root and every logger (the command sets some: the libraries' chatter,
    `bot.state.store` when a chat has no Redis, ...); loggers made meanwhile go back to NOTSET."""

    root: int
    named: dict[str, int]

    @classmethod
    def take(cls) -> _LogLevels:
        return cls(logging.getLogger().level, {name: logger.level for name, logger in _loggers()})

    def restore(self) -> None:
        logging.getLogger().setLevel(self.root)
        for name, logger in _loggers():
            logger.setLevel(self.named.get(name, logging.NOTSET))


def _loggers() -> list[tuple[str, logging.Logger]]:
    return [(name, logger) for name, logger in list(logging.Logger.manager.loggerDict.items())
            if isinstance(logger, logging.Logger)]
