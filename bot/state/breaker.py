"""Whether Redis is worth a call right now: the breaker every Redis user in the process shares.

After a failure the callers skip Redis for `RETRY_AFTER` seconds (so an outage costs no
connect timeout per message), then one call tries again (others skip it while that
probe is out: a Redis that drops packets costs one message a connect timeout, not
every message); the first success closes it. It logs once when Redis goes and once
when it is back. What the bot does meanwhile is `bot.state.resilience`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bot.ops import metrics
from bot.state.interface import StoreError

T = TypeVar("T")

log = logging.getLogger(__name__)

RETRY_AFTER = 2.0
PROBE_LIMIT = 30.0  # a probe that never reported back frees the way after this long


class RedisState:
    def __init__(self, retry_after: float = RETRY_AFTER) -> None:
        self.retry_after = retry_after
        self.degraded = False
        self._skip_until = 0.0
        self._probe_until = 0.0

    @property
    def worth_trying(self) -> bool:
        """Whether to call Redis now. While it is down: False, except for one caller every
        `retry_after` seconds (the probe), who must report `failed` or `succeeded`."""
        if not self.degraded:
            return True
        now = time.monotonic()
        if now < self._skip_until or now < self._probe_until:
            return False
        self._probe_until = now + PROBE_LIMIT
        return True

    def failed(self, operation: str, exc: BaseException) -> None:
        metrics.redis_error(operation)
        self._skip_until = time.monotonic() + self.retry_after
        self._probe_until = 0.0
        if not self.degraded:
            self.degraded = True
            metrics.set_redis_degraded(True)
            log.warning(
                "Redis is unreachable (%s during %s): answering without it; histories come "
                "from the platform, no dedup or lock across replicas until it is back",
                type(exc).__name__, operation,
            )

    def abandoned(self) -> None:
        """A call (perhaps the probe) was cancelled before Redis answered: it learnt nothing, so
        the way is free for the next caller (else a cancelled probe would block Redis for
        `PROBE_LIMIT`, as a Stop or a finished stream cancels writes waiting on the pacer)."""
        self._probe_until = 0.0

    def succeeded(self) -> None:
        self._probe_until = 0.0
        if self.degraded:
            self.degraded = False
            metrics.set_redis_degraded(False)
            log.warning("Redis is reachable again: back to normal")

    async def call(self, operation: str, work: Callable[[], Awaitable[T]], *, otherwise: T) -> T:
        """`work()` when Redis is worth a call and answers; else `otherwise`, the failure noted."""
        if not self.worth_trying:
            return otherwise
        try:
            result = await work()
        except StoreError as exc:
            self.failed(operation, exc)
            return otherwise
        except asyncio.CancelledError:
            self.abandoned()
            raise
        self.succeeded()
        return result
