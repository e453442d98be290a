"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")


@overload
async def wait_until(
    predicate: Callable[[], Awaitable[T]], timeout: float = ..., interval: float = ...
) -> T: ...


@overload
async def wait_until(predicate: Callable[[], T], timeout: float = ..., interval: float = ...) -> T: ...


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        await asyncio.sleep(interval)


class RoundTrips:
    """Counts trips to Redis: each command call and each pipeline execute is one."""

    def __init__(self, client: Any) -> None:
        self.count = 0
        command, pipeline = client.execute_command, client.pipeline

        async def counted_command(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await command(*args, **kwargs)

        def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = pipeline(*args, **kwargs)
            execute = pipe.execute

            async def counted_execute(*a: Any, **k: Any) -> Any:
                self.count += 1
                return await execute(*a, **k)

            pipe.execute = counted_execute
            return pipe

        client.execute_command, client.pipeline = counted_command, counted_pipeline


def clean_environ() -> dict[str, str]:
    """This process's environment without any platform token or model key: what a bot the
    tests start sees, under the settings the test gives it."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_", "TOGETHER_"))}


@asynccontextmanager
async def bot_process(*args: str, env: Mapping[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python ARGS` (e.g. `-m bot run`) as a real process, with only the settings `env` gives
    (no platform tokens or API key leak in from the environment, no .env in its directory);
    its stdin, stdout and stderr are pipes; killed on the way out if it is still running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args,
        cwd=ROOT / "tests" / "data",
        env=clean_environ() | {"PYTHONPATH": str(ROOT)} | dict(env),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def until_ready(
    process: asyncio.subprocess.Process, ready: Callable[[], Awaitable[bool]], timeout: float = 30.0
) -> None:
    """Wait until `ready()`. A bot that exits first, or is not ready in time, fails the test with
    the end of its stderr, where it says why (a port taken, a refused connection)."""

    async def up() -> bool:
        return process.returncode is not None or await ready()

    with contextlib.suppress(AssertionError):  # not in time: said below, with the bot's words
        await wait_until(up, timeout=timeout, interval=0.05)
        if process.returncode is None:
            return
    what = f"exited with status {process.returncode}" if process.returncode is not None \
        else f"was not ready within {timeout} s"
    if process.returncode is None:
        process.kill()
    await process.wait()
    err = await process.stderr.read() if process.stderr else b""
    raise AssertionError(f"the bot {what}; its stderr ends:\n{err.decode(errors='replace')[-3000:]}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
