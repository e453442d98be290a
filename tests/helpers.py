"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

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
