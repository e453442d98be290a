"""One package per platform (slack, discord, console), each registered as a plug-in in
`pyproject.toml`'s entry-point group `chatbot.platforms` (`bot.contract.platform`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """A package's `__getattr__` that imports each name's module when the name is first used: a
    platform package stays cheap to import, as discovering its `platform` object does in every
    command, and its library loads only where the platform runs."""

    def __getattr__(name: str) -> Any:
        if name in modules:
            return getattr(importlib.import_module(modules[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
