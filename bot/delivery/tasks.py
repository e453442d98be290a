"""Racing a piece of work against an event: the one asyncio pattern the core needs twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Stopped:
    """The event came first: the work was cancelled."""


STOPPED = Stopped()


async def unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | Stopped:
    """Run `work` until it ends or `stop` is set, whichever is first; the other is cancelled."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()  # e.g. closes the model's HTTP stream: no more tokens are paid for
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return STOPPED if task.cancelled() else task.result()
