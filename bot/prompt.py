"""Build the request's messages from persona + history, within the token budget.

Token counts are an estimate: UTF-8 bytes / 3, plus 4 per message for the
chat template. English runs about 4 bytes per token and CJK 3, so the
estimate errs on the safe side for both; we never need the exact tokenizer
of whatever model a persona picks.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.contract import HistoryEntry

PER_MESSAGE_TOKENS = 4
NAMES_NOTE = "\n\nMessages from people start with the name of the person who wrote them."
# The model should know a stopped answer is not what it meant to say in full.
STOPPED_MARK = "\n\n(The person stopped this answer here.)"


class InputTooLong(Exception):
    def __init__(self, tokens: int, budget: int) -> None:
        super().__init__(
            f"That message is too long for the model: about {tokens:,} tokens where "
            f"{budget:,} fit. Please shorten it or split it up."
        )
        self.user_message = str(self)


def estimate_tokens(text: str) -> int:
    return len(text.encode("utf-8")) // 3 + PER_MESSAGE_TOKENS


def as_message(entry: HistoryEntry) -> dict[str, str]:
    if entry.role == "user" and entry.author:
        return {"role": "user", "content": f"{entry.author}: {entry.content}"}
    if entry.role == "assistant" and entry.stopped:
        return {"role": "assistant", "content": entry.content + STOPPED_MARK}
    return {"role": entry.role, "content": entry.content}


def build_messages(
    system_prompt: str, history: Sequence[HistoryEntry], budget: int
) -> list[dict[str, str]]:
    """`[system] + history`, dropping the oldest turns to fit `budget` tokens.

    The last entry (the current message) is never dropped; if it does not fit
    with the system prompt alone, `InputTooLong` says so. After trimming the
    history starts on a user turn, as chat templates expect.
    """
    history = [e for e in history if e.role in ("user", "assistant")]  # skips /forget markers
    if not history:
        raise ValueError("build_messages needs at least the current message")
    system = {"role": "system", "content": system_prompt + NAMES_NOTE}
    current = as_message(history[-1])
    used = estimate_tokens(system["content"]) + estimate_tokens(current["content"])
    if used > budget:
        raise InputTooLong(estimate_tokens(current["content"]), budget - estimate_tokens(system["content"]))
    kept: list[dict[str, str]] = []
    for entry in reversed(history[:-1]):
        message = as_message(entry)
        cost = estimate_tokens(message["content"])
        if used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    while kept and kept[0]["role"] != "user":
        kept.pop(0)
    return [system, *kept, current]
