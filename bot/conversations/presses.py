"""Answers to repeated feedback presses, bounded: one private reply per person and answer
every few seconds, and one 👎 reason form per person and answer.

A person who presses 👍/👎 200 times in 10 s has one vote (`bot.conversations.feedback`); without this
they would also get 200 private replies and 100 forms. Kept in this process's memory
(bounded): presses spread over replicas may each be answered once.
"""

from __future__ import annotations

from bot.clock import Clock
from bot.lru import Lru

REPLY_EVERY = 5.0  # seconds between two private replies to one person about one answer
REMEMBERED = 100_000  # (answer, person) pairs kept


class PressReplies:
    def __init__(self, clock: Clock, every: float = REPLY_EVERY) -> None:
        self.clock = clock
        self.every = every
        self._replied: Lru[tuple[str, str], float] = Lru(REMEMBERED)
        self._asked: Lru[tuple[str, str], bool] = Lru(REMEMBERED)

    def may_reply(self, answer_id: str, person: str) -> bool:
        """Whether this press gets a private reply (and, if so, the next within `every` does not)."""
        now = self.clock.now()
        last = self._replied.get((answer_id, person))
        if last is not None and now - last < self.every:
            return False
        self._replied[(answer_id, person)] = now
        return True

    def may_ask_reason(self, answer_id: str, person: str) -> bool:
        """True the first time only: the one reason form this person gets for this answer."""
        if (answer_id, person) in self._asked:
            return False
        self._asked[(answer_id, person)] = True
        return True
