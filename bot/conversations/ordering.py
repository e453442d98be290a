"""Answers in one conversation, one at a time, in the order their messages arrived.

Within a process a FIFO lock per conversation gives the order (asyncio.Lock
wakes waiters in arrival order); across replicas the Redis lock in
`bot.conversations.history` guards the history. Locks exist only while someone holds or
waits for them, so the table stays as small as the number of busy conversations.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.contract import ConversationKey


class ArrivalOrder:
    def __init__(self) -> None:
        self._locks: dict[ConversationKey, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def turn(self, conversation: ConversationKey) -> AsyncIterator[None]:
        lock, users = self._locks.get(conversation, (asyncio.Lock(), 0))
        self._locks[conversation] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[conversation]
            if users <= 1:
                del self._locks[conversation]
            else:
                self._locks[conversation] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
