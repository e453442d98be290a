"""Leases: names only one process may hold at a time (a Discord shard), kept in the store.

A lease lives `LEASE_TTL` seconds in Redis under the holder's id and is renewed every
third of that while the process runs, so a crashed holder frees it within `LEASE_TTL`
and a clean shutdown frees it at once (`release`). A second process asking for a
held lease is told who holds it (`LeaseTaken`) and takes none of the others.

Without Redis at the start the process goes on without the check (the bot answers
without Redis, see `bot.state.resilience`); the renewals take the lease once Redis is back
and log loudly if someone else got it meanwhile.

    leases = Leases(store, holder=inflight.owner)
    await leases.acquire(["discord:shard:0", "discord:shard:1"])   # LeaseTaken if held
    ...
    await leases.release()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence

from bot.contract.budgets import LeaseTaken
from bot.ops import metrics
from bot.state.interface import LeaseState, StoreError

log = logging.getLogger(__name__)

LEASE_TTL = 30.0  # seconds: how long a crashed holder keeps a lease


class Leases:
    def __init__(self, store: LeaseState, holder: str, *, ttl: float = LEASE_TTL) -> None:
        self.store = store
        self.holder = holder
        self.ttl = ttl
        self.held: list[str] = []
        self._lost: set[str] = set()  # held elsewhere, noticed by a renewal (logged once each)
        self._renewing: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    async def acquire(self, names: Sequence[str]) -> None:
        """Take every lease in `names` and keep them renewed; if one is held elsewhere, raise
        `LeaseTaken` and keep none of those taken here."""
        taken: list[str] = []
        for name in names:
            try:
                other = await self.store.hold_lease(name, self.holder, self._ttl_ms)
            except StoreError as exc:
                metrics.redis_error("lease")
                log.warning(
                    "could not check the lease %s (%s: Redis is unreachable): going on; it is "
                    "taken when Redis is back", name, type(exc).__name__,
                )
                other = None
            if other is not None:
                await self._give_up(taken)
                raise LeaseTaken(name, other, self.ttl)
            taken.append(name)
        self.held.extend(n for n in taken if n not in self.held)
        if self._renewing is None:
            self._stopped = False
            self._renewing = asyncio.create_task(self._renew_forever(), name="lease renewals")

    def stop_renewing(self) -> asyncio.Task[None] | None:
        """Renew no more; the leases expire within the TTL unless released (what a crash leaves).
        Returns the renewal task, cancelled."""
        # A flag as well as the cancel: redis-py may swallow a cancellation that lands while it
        # talks to Redis, and the loop must not go on renewing then.
        self._stopped = True
        task, self._renewing = self._renewing, None
        if task is not None:
            task.cancel()
        return task

    async def release(self) -> None:
        """Stop renewing and give every lease up (a crash leaves them to expire)."""
        task = self.stop_renewing()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._give_up(self.held)
        self.held = []

    async def renew(self) -> None:
        """One renewal of every lease held (the background task calls it every third TTL)."""
        for name in list(self.held):
            try:
                other = await self.store.hold_lease(name, self.holder, self._ttl_ms)
            except StoreError as exc:
                metrics.redis_error("lease")
                log.debug("could not renew the lease %s: %s", name, type(exc).__name__)
                continue
            if other is None:
                self._lost.discard(name)
            elif name not in self._lost:
                self._lost.add(name)
                log.error(
                    "the lease %s is held by %s too (taken while Redis was unreachable?): both "
                    "processes get its events; stop one of them", name, other,
                )

    async def _renew_forever(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.ttl / 3)
            if not self._stopped:
                await self.renew()

    async def _give_up(self, names: Iterable[str]) -> None:
        for name in names:
            try:
                await self.store.release_lease(name, self.holder)
            except StoreError as exc:
                log.warning("could not release the lease %s (%s): it expires within %gs",
                            name, type(exc).__name__, self.ttl)
