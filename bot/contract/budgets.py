"""What a platform shares with every other process that writes for it: its rate windows, and
names only one process may hold (a Discord shard).

The core implements both over Redis (`bot.delivery.pacing.Pacer`, `bot.ops.leases.Leases`); a
platform declares its windows next to the writes they bound and asks `Core.pacer` and
`Core.leases` through the protocols here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

SHORT_WINDOW = 2.0  # seconds: a final may wait out a window this short

FINAL = 0  # priorities of required writes: lower goes first
POST = 1


@dataclass(frozen=True)
class Window:
    """One budget: at most `limit` writes in any `per` seconds in `scope`.

    `scope` is `platform:owner:what` (e.g. `slack:T0123:chat.update`,
    `discord:bot:edit:42`): every write in that scope, from any process, counts.
    `limit` is the documented figure learning starts from; `most`, when above it,
    is how far the window may widen while the platform accepts. The last `spare`
    slots are for finals only (a platform client that stalls the write emptying a
    bucket then stalls a final, never an answer still being written).
    """

    scope: str
    limit: int
    per: float
    most: int = 0
    spare: int = 0

    @property
    def long(self) -> bool:
        return self.per > SHORT_WINDOW

    @property
    def platform(self) -> str:
        return self.scope.split(":", 1)[0]

    @property
    def method(self) -> str:
        """A label for metrics: the scope without its owner (workspace or bot)."""
        parts = self.scope.split(":")
        return parts[-1] if len(parts) < 4 else parts[2]


@dataclass(frozen=True)
class Grant:
    ok: bool
    wait: float = 0.0  # refused: seconds until the windows may have room
    spacing: float = 0.0  # seconds an answer should leave between its progress edits


class Pacing(Protocol):
    """The windows' shared budget, as a platform's own writes use it (docs/architecture.md,
    "Pacing")."""

    async def use(
        self, windows: Sequence[Window], member: str = "", priority: int = FINAL, *,
        wait: bool = True, order: float = 0.0, first: bool = False,
    ) -> bool:
        """A required write: spend `member`'s reservation, or wait for a slot."""
        ...

    async def progress(self, windows: Sequence[Window], member: str) -> Grant:
        """An optional write (a progress edit, a typing indicator): now, or not at all."""
        ...


class LeaseTaken(Exception):
    """The lease `name` is held by another process, `holder`."""

    def __init__(self, name: str, holder: str, ttl: float) -> None:
        super().__init__(f"{name} is held by {holder}")
        self.name = name
        self.holder = holder
        self.ttl = ttl


class Leasing(Protocol):
    """Names one process holds at a time across replicas, renewed while it lives."""

    async def acquire(self, names: Sequence[str]) -> None:
        """Hold every name, or none: `LeaseTaken` names one another process holds."""
        ...

    async def release(self) -> None:
        ...
