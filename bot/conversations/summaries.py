"""Summarising messages however many there are: one request when they fit the context budget,
else map-reduce (parts summarised in parallel, then combined), every request within the budget.

Platform-neutral and free of I/O: the model is a function that streams text for a request's
messages (`Ask`), progress a callback. The messages are numbered as given ("[3] Ana: …"), the
model cites those numbers, and `bot.conversations.citations` turns them into links.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.contract.summaries import SourceMessage
from bot.model.prompt import PER_MESSAGE_TOKENS, estimate_tokens

INSTRUCTIONS = (
    "You summarise a conversation for someone who missed it. Each message is numbered: "
    "\"[n] Name: text\". Write a short summary: the main points, decisions and open questions, "
    "as a few bullet points. End each point with the numbers of the messages it comes from in "
    "square brackets, like [3] or [3, 7]. Cite only numbers you were given. Write in the "
    "language of the conversation."
)
PART_INSTRUCTIONS = (
    "You summarise part {part} of {parts} of a longer conversation. Each message is numbered: "
    "\"[n] Name: text\". List its points, decisions and open questions as concise bullet points, "
    "each ending with the numbers of the messages it comes from, like [3] or [3, 7]. Cite only "
    "numbers you were given."
)
COMBINE_INSTRUCTIONS = (
    "You combine summaries of consecutive parts of one conversation (oldest first) into one "
    "summary for someone who missed it: the main points, decisions and open questions, as a few "
    "bullet points. Keep the message numbers in square brackets ([3], [3, 7]) after each point; "
    "cite no other numbers. Write in the language of the conversation."
)
CUT = " …(cut)"
MARGIN_TOKENS = 16  # the estimate errs safe already; this covers the request's framing

# Streams the answer's text for a request's messages, with at most `max_tokens` of answer.
Ask = Callable[[list[dict[str, Any]], int], AsyncIterator[str]]
# (messages read so far, messages in all): called as parts finish.
Progress = Callable[[int, int], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """What a summary may use."""

    budget: int  # tokens per request: the context less the answer's room
    answer_tokens: int  # the final summary's room
    part_tokens: int  # a part's summary's room
    max_messages: int
    max_requests: int
    concurrency: int


@dataclass
class Plan:
    """The messages read, numbered from 1, split into parts that each fit one request."""

    messages: list[SourceMessage]  # oldest first: message n is messages[n - 1]
    lines: list[str]  # "[n] Name: text", index n - 1
    parts: list[list[int]]  # indexes into `lines`, in order
    left_out: int = 0  # the oldest messages not read (the bounds), said in the summary
    reason: str = ""

    @property
    def read(self) -> int:
        return sum(len(part) for part in self.parts)

    @property
    def given(self) -> dict[int, SourceMessage]:
        """The messages the model is given, by the number it cites them with."""
        return {i + 1: self.messages[i] for part in self.parts for i in part}


@dataclass
class Run:
    """What a summary did: for metrics, usage and tests."""

    requests: int = 0
    sizes: list[int] = field(default_factory=list)  # each request's estimated tokens


def line_tokens(line: str) -> int:
    return len(line.encode("utf-8")) // 3 + 1  # the newline; sums never undercount the whole


def numbered(messages: Sequence[SourceMessage], room: int) -> list[str]:
    """Each message as one line, any one longer than `room` tokens cut to fit."""
    lines = []
    for number, message in enumerate(messages, 1):
        text = " ".join(message.text.split())  # one line each: the numbering stays unambiguous
        line = f"[{number}] {message.author or 'someone'}: {text}"
        lines.append(line if line_tokens(line) <= room else cut_to(line, room))
    return lines


def cut_to(text: str, room: int) -> str:
    """`text` cut to `room` tokens, saying so."""
    encoded = text.encode("utf-8")[: max(0, (room - 1) * 3 - len(CUT.encode()))]
    return encoded.decode("utf-8", errors="ignore") + CUT


def pack(sizes: Sequence[int], room: int) -> list[list[int]]:
    """Consecutive items into groups of at most `room` tokens (an item alone may not exceed it)."""
    groups: list[list[int]] = []
    used = room + 1
    for index, size in enumerate(sizes):
        if used + size > room:
            groups.append([])
            used = 0
        groups[-1].append(index)
        used += size
    return groups


def requests_for(parts: int, fan_in: int) -> int:
    """Model requests for `parts` parts: one each, then rounds of combining `fan_in` at a time."""
    if parts <= 1:
        return parts
    total, level = parts, parts
    while level > 1:
        level = math.ceil(level / fan_in)
        total += level
    return total


def room_for(instructions: str, budget: int) -> int:
    """The tokens left for a request's content beside its instructions."""
    return budget - estimate_tokens(instructions) - PER_MESSAGE_TOKENS - MARGIN_TOKENS


def plan(messages: Sequence[SourceMessage], system: str, limits: Limits) -> Plan:
    """Number the messages (the latest `max_messages`) and split them into parts; drop the oldest
    parts when reading every one would take more than `max_requests` model requests."""
    ordered = sorted(messages, key=lambda m: m.ts)  # stable: equal times keep the platform's order
    left_out, reason = 0, ""
    if len(ordered) > limits.max_messages:
        left_out = len(ordered) - limits.max_messages
        reason = f"a summary reads at most {limits.max_messages:,} messages"
        ordered = ordered[left_out:]
    room = room_for(system + PART_INSTRUCTIONS, limits.budget)
    lines = numbered(ordered, room)
    whole = room_for(system + INSTRUCTIONS, limits.budget)
    sizes = [line_tokens(line) for line in lines]
    if sum(sizes) <= whole:
        return Plan(ordered, lines, [list(range(len(lines)))] if lines else [], left_out, reason)
    parts = pack(sizes, room)
    fan_in = max(2, room_for(system + COMBINE_INSTRUCTIONS, limits.budget) // (limits.part_tokens + 1))
    kept = len(parts)
    while kept > 1 and requests_for(kept, fan_in) > limits.max_requests:
        kept -= 1
    if kept < len(parts):
        dropped = parts[: len(parts) - kept]
        left_out += sum(len(part) for part in dropped)
        reason = f"a summary makes at most {limits.max_requests} model requests"
        parts = parts[len(parts) - kept:]
    return Plan(ordered, lines, parts, left_out, reason)


class Summariser:
    """Runs a `Plan`: the final request's text goes to `write` as it streams."""

    def __init__(self, ask: Ask, system: str, limits: Limits, progress: Progress) -> None:
        self.ask = ask
        self.system = system
        self.limits = limits
        self.progress = progress
        self.run = Run()
        self._slots = asyncio.Semaphore(limits.concurrency)

    async def summarise(self, plan: Plan, write: Callable[[str], Awaitable[None]]) -> None:
        total = plan.read
        if len(plan.parts) == 1:
            content = "\n".join(plan.lines[i] for i in plan.parts[0])
            await self._stream(INSTRUCTIONS, content, self.limits.answer_tokens, write)
            return
        done = 0

        async def part(number: int, indexes: list[int]) -> str:
            nonlocal done
            content = "\n".join(plan.lines[i] for i in indexes)
            instructions = PART_INSTRUCTIONS.format(part=number, parts=len(plan.parts))
            summary = await self._complete(instructions, content, self.limits.part_tokens)
            done += len(indexes)
            await self.progress(done, total)
            return summary

        summaries = list(await asyncio.gather(*(part(n, p) for n, p in enumerate(plan.parts, 1))))
        await self._combine(summaries, write)

    async def _combine(self, summaries: list[str], write: Callable[[str], Awaitable[None]]) -> None:
        """Combine part summaries a group at a time until one request takes them all."""
        room = room_for(self.system + COMBINE_INSTRUCTIONS, self.limits.budget)
        while True:
            sections = [f"Part {n}:\n{text.strip()}" for n, text in enumerate(summaries, 1)]
            # A part's summary longer than its room (a model ignoring max_tokens) is cut to fit.
            sections = [s if line_tokens(s) <= room else cut_to(s, room) for s in sections]
            groups = pack([line_tokens(s) for s in sections], room)
            if len(groups) == 1:
                content = "\n\n".join(sections)
                await self._stream(COMBINE_INSTRUCTIONS, content, self.limits.answer_tokens, write)
                return
            summaries = list(await asyncio.gather(*(
                self._complete(COMBINE_INSTRUCTIONS, "\n\n".join(sections[i] for i in group),
                               self.limits.part_tokens)
                for group in groups
            )))

    def _messages(self, instructions: str, content: str) -> list[dict[str, Any]]:
        system = f"{self.system}\n\n{instructions}" if self.system else instructions
        messages = [{"role": "system", "content": system}, {"role": "user", "content": content}]
        self.run.requests += 1
        self.run.sizes.append(sum(estimate_tokens(m["content"]) for m in messages))
        return messages

    async def _complete(self, instructions: str, content: str, max_tokens: int) -> str:
        async with self._slots:
            pieces = [piece async for piece in self.ask(self._messages(instructions, content), max_tokens)]
        return "".join(pieces)

    async def _stream(
        self, instructions: str, content: str, max_tokens: int, write: Callable[[str], Awaitable[None]]
    ) -> None:
        async for piece in self.ask(self._messages(instructions, content), max_tokens):
            await write(piece)


