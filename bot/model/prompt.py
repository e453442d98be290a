"""Build the request's messages from persona + history, within the token budget.

Token counts are an estimate: UTF-8 bytes / 3, plus 4 per message for the
chat template. English runs about 4 bytes per token and CJK 3, so the
estimate errs on the safe side for both; we never need the exact tokenizer
of whatever model a persona picks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bot.contract import Attachment, HistoryEntry
from bot.files.attachments import BINARY, IMAGE, kind_of

PER_MESSAGE_TOKENS = 4
IMAGE_TOKENS = 1500  # a downscaled image (1024 px a side is 1,100–1,400 tokens on common models)
NAMES_NOTE = "\n\nMessages from people start with the name of the person who wrote them."
# The model should know a stopped answer is not what it meant to say in full.
STOPPED_MARK = "\n\n(The person stopped this answer here.)"
TRIMMED = "left out to fit the model's context"


class InputTooLong(Exception):
    def __init__(self, tokens: int, budget: int) -> None:
        super().__init__(
            f"That message is too long for the model: about {tokens:,} tokens where "
            f"{budget:,} fit. Please shorten it or split it up."
        )
        self.user_message = str(self)


def estimate_tokens(text: str) -> int:
    return len(text.encode("utf-8")) // 3 + PER_MESSAGE_TOKENS


def message_tokens(message: Mapping[str, Any]) -> int:
    """The estimate for one request message: its text, plus a fixed cost per image."""
    content = message["content"]
    if isinstance(content, str):
        return estimate_tokens(content)
    text = "".join(part.get("text", "") for part in content if part.get("type") == "text")
    images = sum(1 for part in content if part.get("type") == "image_url")
    return estimate_tokens(text) + images * IMAGE_TOKENS


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in `text`, so the file cannot close it."""
    longest, run = 0, 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def file_text(a: Attachment, images: Mapping[str, str]) -> str:
    """How a file reads in its message: a fenced block, or a line that names it."""
    kind = kind_of(a)
    if a.text is not None:
        fence = _fence(a.text)
        return f"File `{a.name}`:\n{fence}\n{a.text}\n{fence}"
    if a.note:
        return f"File `{a.name}`: not read ({a.note})."
    if kind == IMAGE:
        if a.ref in images:
            return f"Image `{a.name}` (attached below)."
        return f"Image `{a.name}`: not shown (this model does not take images, or it is no longer available)."
    if kind == BINARY:
        return f"File `{a.name}` ({a.mime or 'unknown type'}): not read (not a text file, a PDF or an image)."
    return f"File `{a.name}`: not read."


def as_message(entry: HistoryEntry, images: Mapping[str, str] | None = None) -> dict[str, Any]:
    images = images or {}
    text = f"{entry.author}: {entry.content}" if entry.role == "user" and entry.author else entry.content
    if entry.role == "assistant" and entry.stopped:
        text += STOPPED_MARK
    if entry.role == "assistant" and entry.tools:
        text = f"(Tools I used for this answer, with their results:\n{entry.tools})\n\n{text}"
    if not entry.attachments:
        return {"role": entry.role, "content": text}
    text = "\n\n".join([text, *(file_text(a, images) for a in entry.attachments)])
    shown = [images[a.ref] for a in entry.attachments if a.text is None and not a.note and a.ref in images]
    if not shown:
        return {"role": entry.role, "content": text}
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in shown]
    return {"role": entry.role, "content": parts}


@dataclass
class Prompt:
    messages: list[dict[str, Any]]
    trimmed: list[str] = field(default_factory=list)  # the current message's files left out to fit


def build_messages(
    system_prompt: str, history: Sequence[HistoryEntry], budget: int
) -> list[dict[str, Any]]:
    """`[system] + history` within `budget` tokens (see `build_prompt`)."""
    return build_prompt(system_prompt, history, budget).messages


def build_prompt(
    system_prompt: str, history: Sequence[HistoryEntry], budget: int, images: Mapping[str, str] | None = None
) -> Prompt:
    """`[system] + history`, trimmed to fit `budget` tokens.

    Files go first, oldest first (each replaced by a line naming it); then the
    oldest turns. The current message (the last entry) is never dropped, nor its
    text; if that text does not fit with the system prompt alone, `InputTooLong`
    says so. After trimming the history starts on a user turn, as chat templates
    expect. `images` maps image references to the data URLs that can be sent.
    """
    images = images or {}
    entries = [e for e in history if e.role in ("user", "assistant")]  # skips /forget markers
    if not entries:
        raise ValueError("build_messages needs at least the current message")
    system = {"role": "system", "content": system_prompt + NAMES_NOTE}
    system_cost = estimate_tokens(system["content"])
    bare = message_tokens(as_message(replace(entries[-1], attachments=())))
    if system_cost + bare > budget:
        raise InputTooLong(bare, budget - system_cost)
    costs = [message_tokens(as_message(e, images)) for e in entries]
    used = system_cost + sum(costs)
    trimmed: list[str] = []
    for i, entry in enumerate(entries):  # files first, oldest first
        while used > budget and (full := _first_full(entry, images)) is not None:
            files = list(entry.attachments)
            files[full] = replace(files[full], text=None, note=TRIMMED)
            if i == len(entries) - 1:
                trimmed.append(files[full].name)
            entry = entries[i] = replace(entry, attachments=tuple(files))
            cost = message_tokens(as_message(entry, images))
            used += cost - costs[i]
            costs[i] = cost
        if used <= budget:
            break
    start = 0
    while used > budget and start < len(entries) - 1:  # then turns, oldest first
        used -= costs[start]
        start += 1
    kept = entries[start:-1]
    while kept and kept[0].role != "user":
        kept.pop(0)
    messages = [system, *(as_message(e, images) for e in kept), as_message(entries[-1], images)]
    return Prompt(messages, trimmed)


def _first_full(entry: HistoryEntry, images: Mapping[str, str]) -> int | None:
    """The first file of `entry` that costs more than a line naming it."""
    for index, a in enumerate(entry.attachments):
        if not a.note and (a.text is not None or (kind_of(a) == IMAGE and a.ref in images)):
            return index
    return None
