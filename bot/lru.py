"""A bounded map for what a long-running process remembers (reply chains, file links,
workspaces, authorizations): the oldest entries go first, so memory stays flat for months."""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Lru(OrderedDict[K, V]):
    """At most `size` entries; setting one makes it the newest, the oldest leave first."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)

    def put(self, key: K, value: V) -> None:
        self[key] = value
