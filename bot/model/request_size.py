"""One request to the model, bounded in bytes (`MODEL_REQUEST_MAX_BYTES`).

The prompt's token budget (`bot.model.prompt`) counts an image as a fixed number of tokens,
whatever its bytes: five 4 MB screenshots fit the tokens and make a 28 MB body that a
model API refuses (413). Here the prompt is built, its body measured, and when it is
over the cap:

1. the images are re-encoded smaller (JPEG, 768 then 512 pixels a side; in the sandbox),
   largest first;
2. what still does not fit is left out: earlier turns' images first (oldest first), then
   this message's from its last. This message's images left out are named in the answer
   and noted in the history, so no later turn sends them again.

A 413 from the server all the same (its limit below ours) is never retried (`bot.model.llm`);
`too_large_message` names the images the request carried, and those too are noted in
the history, so a follow-up in the thread goes without them.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bot.contract import HistoryEntry
from bot.files.sandbox import Sandbox
from bot.model.prompt import Prompt, build_prompt

SIDES = (768, 512)  # pixels a side, each round of re-encoding
IMAGE_PART_BYTES = 64  # an image part's JSON around its data URL
SLACK_BYTES = 4_000  # the rest of the body (model, options) and the text's few differences
TOO_LARGE_NOTE = "it is too large to send to the model"


def size_text(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 1_000_000 else f"{n / 1_000:.0f} KB"


@dataclass
class FittedPrompt:
    prompt: Prompt
    notes: list[str] = field(default_factory=list)  # this message's images left out, for the answer
    left_out: list[str] = field(default_factory=list)  # refs to note in the history: never sent again
    sent: dict[str, str] = field(default_factory=dict)  # ref -> name of each image the request carries

    def too_large_message(self, fallback: str) -> str:
        """What a 413 tells the person: which images made the request too large."""
        if not self.sent:
            return fallback
        names = ", ".join(f"`{name}`" for name in self.sent.values())
        return (
            f"The model API refused the request as too large (413) with {names}. I have left "
            f"{'it' if len(self.sent) == 1 else 'them'} out of this conversation: ask again to get an "
            "answer without, or send smaller files."
        )


class RequestFit:
    def __init__(self, max_bytes: int, sandbox: Sandbox) -> None:
        self.max_bytes = max_bytes
        self.sandbox = sandbox

    async def build(
        self, system_prompt: str, history: Sequence[HistoryEntry], budget: int,
        images: Mapping[str, str], current: Sequence[str],
    ) -> FittedPrompt:
        """`build_prompt`'s prompt, its images shrunk or left out to keep the body under the cap.
        `current` are this message's image refs; `images` lists them first, then earlier turns'
        newest first (`Reader.replay`)."""
        names = {a.ref: a.name for entry in history for a in entry.attachments}
        images = dict(images)
        text_bytes = _body_bytes(build_prompt(system_prompt, history, budget).messages)
        room = self.max_bytes - SLACK_BYTES - text_bytes
        left_out: list[str] = []
        if _images_bytes(images) > room:
            for side in SIDES:
                for ref in sorted(images, key=lambda r: -len(images[r])):
                    if _images_bytes(images) <= room:
                        break
                    images[ref] = await self._smaller(images[ref], side)
            earlier = [ref for ref in images if ref not in current]
            order = [*reversed(earlier), *reversed([ref for ref in current if ref in images])]
            while _images_bytes(images) > room and order:
                ref = order.pop(0)
                del images[ref]
                left_out.append(ref)
        prompt = build_prompt(system_prompt, history, budget, images=images)
        # The earlier turns' images left out may fit a later request; this message's never will.
        dropped = [ref for ref in left_out if ref in current]
        notes = [
            f"`{names.get(ref, 'image')}` was left out: with it the request to the model would be over "
            f"{size_text(self.max_bytes)}." for ref in dropped
        ]
        sent = {ref: names.get(ref, "image") for ref in images}
        return FittedPrompt(prompt, notes, dropped, sent)

    async def _smaller(self, url: str, side: int) -> str:
        """The image re-encoded as a JPEG within `side` pixels, or as it was if that is no smaller."""
        try:
            raw = await asyncio.to_thread(base64.b64decode, url.split(",", 1)[1])
            smaller = await self.sandbox.parse("smaller", raw, side)
        except (ValueError, IndexError):
            return url
        return smaller if len(smaller) < len(url) else url


def _images_bytes(images: Mapping[str, str]) -> int:
    return sum(len(url) + IMAGE_PART_BYTES for url in images.values())


def _body_bytes(messages: Sequence[object]) -> int:
    """The messages as JSON, as httpx sends them (non-ASCII escaped)."""
    return len(json.dumps(messages))
