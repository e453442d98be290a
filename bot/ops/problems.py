"""How a check or a failed start is said: shared by the app layer and the adapters' own checks.

The app layer (`bot.app.check`, `bot.app.startup`) runs the checks and turns a
platform's start-up exception into one line; each adapter's `check.py` knows
what its platform's refusals mean. Both sides speak these words, declared in the contract
(`bot.contract.platform`), so the adapters never import the app layer (docs/architecture.md#layers).

Exit status 2 means a setting is wrong (fix it and start again), 1 that something
outside failed (a platform unreachable, a port taken): see docs/operations.md.
"""

from __future__ import annotations

import errno

# Declared in the contract, since a plug-in platform speaks them too; named here as well for the
# core's and the app layer's modules that always found them here.
from bot.contract.platform import CONFIG, RUNTIME, CheckFailed, Problem

__all__ = ["CONFIG", "RUNTIME", "CheckFailed", "Problem", "port_in_use", "why"]


def port_in_use(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE


def why(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
