"""The tool-call loop's parts: the offered tools as the model sees them, the streamed calls put
together, each call run (in parallel, within its timeout and the turn's), its result made safe,
and the steps the thread shows. `bot.turn` drives it: ask the model, run what it asks for, send
the results back as `tool` messages, ask again, until it answers in text or the steps run out.

A result is text from outside: cleaned like any model input and cut to TOOL_RESULT_MAX_CHARS; the
model's answer after it goes out through the platform's own defusing (Slack's mentions,
Discord's `allowed_mentions`), like every answer. A call that needs the asker's approval waits
for it (`bot.tools.approval`); where no buttons can be shown, such tools are not offered.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.contract import StepView
from bot.conversations import sanitize
from bot.model.llm import ToolCallPiece
from bot.ops import metrics
from bot.tools.servers import ToolInfo, ToolServers, ToolUnavailable

UNKNOWN_SERVER = "(no such tool)"  # `usage`'s row for calls of tools that were not offered
HISTORY_RESULT_CHARS = 2_000  # of each result, kept in the history for a follow-up
HISTORY_RECORD_CHARS = 16_000  # of all of an answer's calls: the history's bound per turn holds
NO_TOOLS_NOTE = "_(This model could not use tools here, so it answered without them.)_"
STEPS_NOTE = "_(I reached the limit of {n} tool steps and answered with what I had.)_"
DECLINED = "The person declined this call: it was not run. Do not try it again unless they ask."
NO_ANSWER = "The person did not approve this call in time: it was not run."
OUTPUT_CHARS = 80  # of a result's first line, shown on its step (Slack's task card)
LIMIT_NOTE = "_(You reached your limit of messages a minute, so I answered without more tool steps.)_"
LIMIT_RESULT = ("error: the person's limit of messages a minute is reached (each tool step counts as "
                "one): this call was not run. Answer now with what you have, without more tool calls.")
STEPS_PROMPT = "(The tool budget for this answer is spent: answer now with what you have.)"


def openai_tool(tool: ToolInfo) -> dict[str, Any]:
    """The tool as an OpenAI-compatible function, named `server__tool`."""
    return {"type": "function", "function": {
        "name": tool.qualified, "description": (tool.description or tool.title)[:1024],
        "parameters": tool.schema,
    }}


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


class CallAssembler:
    """Streamed tool-call pieces put back together by their index: the name first, the
    arguments in pieces after."""

    def __init__(self) -> None:
        self._parts: dict[int, list[str]] = {}

    def feed(self, pieces: Sequence[ToolCallPiece]) -> None:
        for piece in pieces:
            part = self._parts.setdefault(piece.index, ["", "", ""])
            part[0] = part[0] or piece.id
            part[1] += piece.name if not part[1] or piece.name != part[1] else ""
            part[2] += piece.arguments

    def calls(self) -> list[ToolCall]:
        return [
            ToolCall(id or f"call_{index}", name, args)
            for index, (id, name, args) in sorted(self._parts.items()) if name
        ]


@dataclass
class Step:
    """One call as the thread shows it."""

    id: str
    title: str
    detail: str
    state: str = "running"  # running, done, failed, timed out, unavailable, not offered
    output: str = ""  # the result's first line, for a surface that shows it (StepView)

    def line(self) -> str:
        ending = "…" if self.state == "running" else f"… {self.state}"
        return f"_{self.title}{self.detail}{ending}_"

    def view(self) -> StepView:
        status = ("in_progress" if self.state in ("running", "waiting for approval")
                  else "complete" if self.state == "done" else "error")
        details = self.detail.strip().removeprefix("(").removesuffix(")").replace("\\_", "_")
        return StepView(self.id, self.title.replace("\\_", "_"), status, details, self.output, self.line())


def cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[… cut: the result was {len(text):,} characters; the first {limit:,} are kept]"


def _short_arguments(arguments: dict[str, Any]) -> str:
    if not arguments:
        return ""
    shown = ", ".join(f"{v}" if isinstance(v, str) else json.dumps(v) for v in arguments.values())
    shown = shown.replace("\n", " ").replace("_", "\\_")
    return f" ({shown[:60]}{'…' if len(shown) > 60 else ''})"


def _first_line(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line[:OUTPUT_CHARS] + ("…" if len(line) > OUTPUT_CHARS else "")


@dataclass
class ToolUse:
    """One answer's tools: what is offered, the steps taken, what the history keeps."""

    servers: ToolServers
    offered: list[ToolInfo]
    result_max_chars: int
    max_steps: int
    deadline: float  # monotonic: the turn's deadline for all its calls
    on_change: Callable[[], None] = lambda: None
    # Asks the asker to approve a call (bot/tools/approval.py): "approved", "denied" or "timeout".
    approve: Callable[[ToolInfo, dict[str, Any]], Awaitable[str]] | None = None
    needs_approval: Callable[[ToolInfo], bool] = lambda tool: False
    # Whether the asker may take one more step (bot.ops.limits: a step counts like a message).
    may_step: Callable[[], Awaitable[bool]] = field(default=lambda: _always())
    steps: list[Step] = field(default_factory=list)
    record: list[str] = field(default_factory=list)  # what was called and answered, for the history
    notes: list[str] = field(default_factory=list)
    calls: int = 0
    by_server: Counter[str] = field(default_factory=Counter)  # calls per server, for `usage`

    @property
    def schemas(self) -> list[dict[str, Any]]:
        return [openai_tool(t) for t in self.offered]

    def section(self) -> str:
        """The steps shown at the top of the answer."""
        return "\n".join(step.line() for step in self.steps)

    def views(self) -> list[StepView]:
        """The steps for a surface that shows them apart from the text (`StepSurface`)."""
        return [step.view() for step in self.steps]

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    async def run(self, calls: list[ToolCall]) -> list[dict[str, Any]]:
        """Every call of one round, in parallel; their `tool` messages, in the calls' order."""
        self.calls += len(calls)
        servers = {t.qualified: t.server for t in self.offered}
        self.by_server.update(servers.get(call.name, UNKNOWN_SERVER) for call in calls)
        return list(await asyncio.gather(*(self._one(call) for call in calls)))

    def refuse(self, calls: list[ToolCall], text: str) -> list[dict[str, Any]]:
        """The `tool` messages of a round that is not run: each call answered with `text`."""
        return [self._result(call, text) for call in calls]

    async def _one(self, call: ToolCall) -> dict[str, Any]:
        by_name = {t.qualified: t for t in self.offered}
        tool = by_name.get(call.name)
        step = Step(call.id, tool.title if tool else call.name.replace("_", "\\_"), "")
        self.steps.append(step)
        outcome, seconds, text = "ok", None, ""
        try:
            if tool is None:
                outcome, step.state = "not_offered", "not offered"
                text = f"error: there is no tool named {call.name!r} here; use only the tools offered."
                return self._result(call, text)
            try:
                arguments = json.loads(call.arguments or "{}")
                if not isinstance(arguments, dict):
                    raise ValueError("not an object")
            except ValueError:
                outcome, step.state = "bad_arguments", "failed"
                text = "error: the arguments are not a JSON object; call the tool again with valid JSON."
                return self._result(call, text)
            step.detail = _short_arguments(arguments)
            if self.needs_approval(tool):
                step.state = "waiting for approval"
                self.on_change()
                waited = time.monotonic()
                decision = await self.approve(tool, arguments) if self.approve else "denied"
                self.deadline += time.monotonic() - waited  # the person's time is not the tools'
                if decision != "approved":
                    outcome, step.state = "declined", "declined"
                    return self._result(call, DECLINED if decision == "denied" else NO_ANSWER)
                step.state = "running"
            self.on_change()
            text, outcome, seconds = await self._call(tool, arguments)
            step.state = {"ok": "done", "error": "failed", "timeout": "timed out"}.get(outcome, outcome)
            step.output = _first_line(text)
            return self._result(call, text)
        except asyncio.CancelledError:
            outcome, step.state = "cancelled", "stopped"
            raise
        finally:
            server, name = (tool.server, tool.name) if tool else ("", "")
            metrics.tool_call(server, name, outcome, seconds)
            self.on_change()

    async def _call(self, tool: ToolInfo, arguments: dict[str, Any]) -> tuple[str, str, float | None]:
        server = self.servers.servers[tool.server]
        timeout = min(server.spec.timeout, self.deadline - time.monotonic())
        if timeout <= 0:
            return "error: no time is left in this answer for another tool call.", "timeout", None
        started = time.monotonic()
        try:
            output = await server.call(tool.name, arguments, timeout)
        except TimeoutError:
            waited = time.monotonic() - started
            return f"error: the tool did not answer within {timeout:.0f} s.", "timeout", waited
        except ToolUnavailable:
            return "error: the tool's server is unavailable right now.", "unavailable", None
        seconds = time.monotonic() - started
        text = sanitize.clean(output.text)
        return cut(text, self.result_max_chars), ("error" if output.is_error else "ok"), seconds

    def _result(self, call: ToolCall, text: str) -> dict[str, Any]:
        kept = f"- called {call.name} {call.arguments[:300]} → {cut(text, HISTORY_RESULT_CHARS)}"
        if sum(len(line) for line in self.record) + len(kept) <= HISTORY_RECORD_CHARS:
            self.record.append(kept)
        elif not self.record or self.record[-1] != "- (more calls, not kept)":
            self.record.append("- (more calls, not kept)")
        return {"role": "tool", "tool_call_id": call.id, "content": text}


async def _always() -> bool:
    return True


def assistant_calls(text: str, calls: list[ToolCall]) -> dict[str, Any]:
    """The assistant's turn that asked for `calls`, as the next request repeats it."""
    return {
        "role": "assistant", "content": text or None,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or "{}"}}
            for c in calls
        ],
    }
