"""The process's background upkeep: one Redis pipeline a second, at most.

Each tick writes, in one round trip, whatever changed since the last one: the
records of answers in flight (`bot.ops.inflight`), the token usage counted since
(`bot.ops.usage`), and the process's heartbeat (every `heartbeat_every` seconds even
when idle). Every `sweep_every` seconds it also looks for answers orphaned by a
dead process and marks them.

`python -m bot run` runs one (`bot.app.service`); the engine works without it, at
the price of one usage write per answer and no crash recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bot.ops import metrics
from bot.ops.inflight import InFlight
from bot.ops.usage import Usage
from bot.state.interface import Client, StoreError

log = logging.getLogger(__name__)

TICK = 1.0
HEARTBEAT_EVERY = 5.0
SWEEP_EVERY = 5.0


class Upkeep:
    def __init__(
        self,
        client: Client,
        inflight: InFlight,
        usage: Usage,
        *,
        tick: float | None = None,
        heartbeat_every: float | None = None,
        sweep_every: float | None = None,
    ) -> None:
        self._redis = client
        self.inflight = inflight
        self.usage = usage
        # The module's values unless given (read here, so a test process can change them).
        self.tick_every = TICK if tick is None else tick
        self.heartbeat_every = HEARTBEAT_EVERY if heartbeat_every is None else heartbeat_every
        self.sweep_every = SWEEP_EVERY if sweep_every is None else sweep_every
        self._task: asyncio.Task[None] | None = None
        self._last_heartbeat = float("-inf")
        self._last_sweep = float("-inf")
        self._unreachable = False

    async def start(self) -> None:
        """Beat once (so records never exist without a heartbeat), then run in the background."""
        self.inflight.active = self.usage.batched = True
        try:
            await self.tick()
        except StoreError as exc:  # readiness says so; the loop keeps trying
            metrics.redis_error("upkeep")
            log.warning("upkeep could not reach Redis: %s", exc)
        self._task = asyncio.create_task(self._run(), name="upkeep")

    async def stop(self) -> None:
        """Stop the loop, write what is left, and drop the heartbeat (a clean exit)."""
        if not self.inflight.active:
            return  # never started
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.tick()
            self.inflight.active = self.usage.batched = False
            await self.inflight.close()
        except StoreError as exc:
            metrics.redis_error("upkeep")
            log.warning("could not write the last usage and in-flight records: %s", exc)
        finally:
            self.inflight.active = self.usage.batched = False

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_every)
            try:
                await self.tick()
                if time.monotonic() - self._last_sweep >= self.sweep_every:
                    self._last_sweep = time.monotonic()
                    await self.inflight.sweep()
                if self._unreachable:
                    self._unreachable = False
                    log.info("upkeep reaches Redis again")
            except StoreError as exc:
                metrics.redis_error("upkeep")
                # Once per outage: a tick a second would fill the log while Redis is away.
                log.log(logging.DEBUG if self._unreachable else logging.WARNING,
                        "upkeep could not reach Redis: %s", exc)
                self._unreachable = True
            except Exception:
                log.exception("upkeep failed")

    async def tick(self) -> None:
        """Write what changed, in one pipeline (none at all when nothing did)."""
        now = time.monotonic()
        heartbeat = now - self._last_heartbeat >= self.heartbeat_every
        async with self.inflight.lock:
            pipe = self._redis.pipeline(transaction=False)
            commit = self.inflight.queue(pipe, heartbeat=heartbeat)
            batch = self.usage.take()
            self.usage.queue(pipe, batch)
            if not len(pipe):
                return
            try:
                await pipe.execute()
            except Exception:
                self.usage.restore(batch)
                raise
            finally:
                await pipe.reset()  # type: ignore[no-untyped-call]
            commit()
        if heartbeat:
            self._last_heartbeat = now

    async def sweep(self) -> int:
        """Mark orphaned answers now (the service does it once at start)."""
        self._last_sweep = time.monotonic()
        return await self.inflight.sweep()
