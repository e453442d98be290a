"""Citations in a summary: the model cites the numbers of the messages it was given ("[3]",
"[3, 7]"); the reader sees links to those messages. A number naming no message given is dropped,
so a made-up source never shows. Works on a stream: a citation split across deltas is held back
until it closes (at most `MAX_HELD` characters)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping

MAX_HELD = 40  # longer than any citation of a few numbers: held text beyond it is plain text
_OPEN = re.compile(r"\[[\d,\s]*\Z")  # what a citation still being written looks like
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\](?!\()")  # not a Markdown link's "[3](…)"

# A link to message number n ("" when it has none).
LinkOf = Callable[[int], Awaitable[str]]


class Citations:
    """Turns "[n]" into "[n](link)" for the messages in `known` (numbers the model was given)."""

    def __init__(self, known: Mapping[int, object], link_of: LinkOf) -> None:
        self.known = known
        self.link_of = link_of
        self.dropped = 0  # citations of numbers never given
        self.cited: set[int] = set()
        self._held = ""

    async def feed(self, text: str) -> str:
        """The part of the stream so far that can be shown, citations turned into links."""
        text = self._held + text
        self._held = ""
        start = text.rfind("[")
        if start >= 0 and _OPEN.match(text, start) and len(text) - start <= MAX_HELD:
            text, self._held = text[:start], text[start:]
        # Trailing spaces wait for what follows: a dropped citation takes the space before it.
        kept = text.rstrip(" ")
        text, self._held = kept, text[len(kept):] + self._held
        return await self._linked(text)

    async def flush(self) -> str:
        """The end of the stream: whatever was held back."""
        text, self._held = self._held, ""
        return await self._linked(text)

    async def _linked(self, text: str) -> str:
        out: list[str] = []
        last = 0
        for match in _CITATION.finditer(text):
            out.append(text[last:match.start()])
            last = match.end()
            links = []
            for number in (int(n) for n in match.group(1).split(",")):
                if number not in self.known:
                    self.dropped += 1
                    continue
                self.cited.add(number)
                link = await self.link_of(number)
                links.append(f"[{number}]({link})" if link else f"[{number}]")
            if not links and out and out[-1].endswith(" "):
                out[-1] = out[-1][:-1]  # "a point [99]." reads "a point."
            out.append(" ".join(links))
        out.append(text[last:])
        return "".join(out)
