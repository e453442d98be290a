"""Reasoning that some servers put inline, at the start of `content`: `<think>…</think>`.

The core shows only the answer; what is inside the tags is reasoning (the status may say
the model is thinking, the text never shows it). The stream arrives in arbitrary pieces,
so a tag may be split over several chunks: text that might still turn into an opening
tag is held back until it is clear.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN = "<think>"
CLOSE = "</think>"


@dataclass(frozen=True)
class Split:
    answer: str = ""
    reasoning: str = ""


class InlineThinking:
    """Feed `content` deltas in order; each call returns what is answer and what is reasoning."""

    def __init__(self) -> None:
        self._state = "start"  # start | thinking | answer
        self._held = ""

    def feed(self, content: str) -> Split:
        if self._state == "answer":
            return Split(answer=content)
        self._held += content
        if self._state == "start":
            head = self._held.lstrip()
            if not head:
                return Split()  # only whitespace so far: it may still open a tag
            if OPEN.startswith(head):
                return Split()  # "<thi": wait for the rest
            if not head.startswith(OPEN):
                self._state = "answer"
                held, self._held = self._held, ""
                return Split(answer=held)
            self._state = "thinking"
            self._held = head[len(OPEN):]
        # thinking: everything up to the closing tag is reasoning
        end = self._held.find(CLOSE)
        if end >= 0:
            reasoning, rest = self._held[:end], self._held[end + len(CLOSE):]
            self._state, self._held = "answer", ""
            return Split(answer=rest.lstrip(), reasoning=reasoning)
        # Keep back a tail that could be the start of "</think>".
        keep = _partial_suffix(self._held, CLOSE)
        reasoning = self._held[: len(self._held) - keep]
        self._held = self._held[len(self._held) - keep:]
        return Split(reasoning=reasoning)

    def flush(self) -> Split:
        """The stream ended: text still held back was answer text (or unfinished reasoning)."""
        held, self._held = self._held, ""
        if self._state == "thinking":
            return Split(reasoning=held)
        self._state = "answer"
        return Split(answer=held)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
