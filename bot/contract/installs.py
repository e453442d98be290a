"""What a platform keeps per installation when many workspaces install it (Slack's
multi-workspace mode): records encrypted at rest, and single-use OAuth states.

The app layer builds them over the bot's Redis (`bot.state.installations`) and hands
them to the adapter, which maps its library's types onto them
(`adapters/slack/installations.py`). Values are opaque strings here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Unreadable(Exception):
    """A stored record that no key in force opens (written with another key, or altered)."""


class InstallRecords(Protocol):
    async def put(self, name: str, plain: str) -> None:
        """Keep `plain` under `name`, encrypted."""
        ...

    async def get(self, name: str) -> str | None:
        """The record, decrypted; None if there is none. Raises `Unreadable`."""
        ...

    async def delete(self, *names: str) -> int:
        """How many of `names` were deleted."""
        ...


class OneTimeStates(Protocol):
    async def issue(self, state: str) -> None:
        """Keep `state` for a while (an install link's lifetime)."""
        ...

    async def consume(self, state: str) -> bool:
        """True once for a state issued and not yet expired; False after."""
        ...


@dataclass(frozen=True)
class Installs:
    records: InstallRecords
    states: OneTimeStates
