"""Split a growing Markdown answer into platform-sized messages.

The split is greedy from the start and depends only on the text up to each
cut, so as the answer grows, finished messages never change. A cut inside a
code fence closes the fence in that message and reopens it (same language
tag) in the next, so no finished message is left with an open fence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FENCE_CLOSE = "\n```"
_SENTENCE_END = re.compile(r"[.!?:;](?=\s)")


@dataclass(frozen=True)
class Boundaries:
    """The last place of each kind where a text can be cut with more text after it (0: none).

    `paragraph` is the start of the last blank line, `sentence` just past the last sentence
    mark followed by a space, or the last line break, `word` the last whitespace.
    """

    paragraph: int
    sentence: int
    word: int


def boundaries(text: str) -> Boundaries:
    body = text.rstrip()  # a cut needs words after it
    sentence_end = max((m.end() for m in _SENTENCE_END.finditer(body)), default=0)
    word = max(body.rfind(" "), body.rfind("\n"), body.rfind("\t"))
    return Boundaries(
        paragraph=max(0, body.rfind("\n\n")),
        sentence=max(sentence_end, body.rfind("\n"), 0),
        word=max(0, word),
    )


def complete_words(text: str) -> str:
    """`text` without a last word that may still be growing (the whole text if it has one word)."""
    if not text or text[-1].isspace():
        return text
    at = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
    return text[:at] if at > 0 else text


def open_fence(text: str) -> str | None:
    """The opening line of the code fence still open at the end of `text`, if any."""
    opener: str | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if opener is None:
            if stripped.startswith(("```", "~~~")):
                opener = stripped
        else:
            char = opener[0]
            length = len(opener) - len(opener.lstrip(char))
            # A closing fence is the same character, at least as long, and nothing else.
            if stripped and set(stripped) == {char} and len(stripped) >= length:
                opener = None
    return opener


def _cut_point(text: str, limit: int) -> int:
    """Where to end a message of at most `limit` characters: paragraph, line, word, anywhere."""
    window = text[:limit]
    floor = limit // 2
    for separator in ("\n\n", "\n", " "):
        at = window.rfind(separator, floor)
        if at > 0:
            return at
    return limit


def split_message(text: str, limit: int) -> list[str]:
    if limit < 50:
        raise ValueError("message limit too small to split sensibly")
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        room = limit - len(FENCE_CLOSE)
        cut = _cut_point(rest, room)
        head, rest = rest[:cut], rest[cut:]
        fence = open_fence(head)
        if fence is not None:
            head = head.rstrip("\n") + FENCE_CLOSE
            rest = fence + "\n" + rest.lstrip("\n")
        else:
            rest = rest.lstrip("\n ")
        parts.append(head.rstrip())
    parts.append(rest)
    return parts
