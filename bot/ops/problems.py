"""How a check or a failed start is said: shared by the app layer and the adapters' own checks.

The app layer (`bot.app.check`, `bot.app.startup`) runs the checks and turns a
platform's start-up exception into one line; each adapter's `check.py` knows
what its platform's refusals mean. Both sides speak these words, which live here,
in the core, so the adapters never import the app layer (docs/architecture.md#layers).

Exit status 2 means a setting is wrong (fix it and start again), 1 that something
outside failed (a platform unreachable, a port taken): see docs/operations.md.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

CONFIG = 2
RUNTIME = 1


@dataclass(frozen=True)
class Problem:
    """A startup problem: one line for the person, and the exit status (2 settings, 1 runtime)."""

    line: str
    code: int


class CheckFailed(Exception):
    """The message says precisely what is wrong and how to fix it."""


def port_in_use(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE


def why(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
