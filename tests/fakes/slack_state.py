"""What the fake Slack remembers: messages per channel, users, calls, rate windows.

Kept apart from the HTTP plumbing so a test can read "what the user sees" without
knowing how the server is wired.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

TEXT_LIMIT = 4_000  # msg_too_long above this many characters of `text`
MARKDOWN_LIMIT = 12_000  # and above this many of `markdown_text` / markdown blocks


@dataclass
class Call:
    """One Web API call as the fake saw it (tokens are the fake's own, so the one used is kept:
    multi-workspace tests check each workspace is written to with its own)."""

    method: str
    params: dict[str, Any]
    at: float  # time.monotonic() when it arrived
    status: int = 200
    error: str | None = None
    token: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def markdown(self) -> str | None:
        """The Markdown a post or update shows: `markdown_text`, or its `markdown` blocks
        (a message with buttons); None if it sent neither."""
        if "markdown_text" in self.params:
            return str(self.params["markdown_text"])
        blocks = self.params.get("blocks") or []
        parts = [str(b.get("text", "")) for b in blocks if b.get("type") == "markdown"]
        return "\n".join(parts) if parts else None


@dataclass
class Message:
    ts: str
    channel: str
    user: str
    text: str = ""
    markdown_text: str | None = None
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None
    bot_id: str | None = None
    streaming: bool = False
    stream_started: float = 0.0
    edits: int = 0
    history: list[str] = field(default_factory=list)  # every visible text it had, in order
    files: list[dict[str, Any]] = field(default_factory=list)  # file objects, as events carry them
    # A stream's `task_update` chunks: each card as it stands (by id), and every status a card had.
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_log: list[tuple[str, str]] = field(default_factory=list)  # (task id, status), in order
    plans: list[str] = field(default_factory=list)  # every `plan_update` title, in order

    @property
    def cards(self) -> list[str]:
        """The task cards as a person sees them: "title (details): status → output"."""
        shown = []
        for task in self.tasks.values():
            details = f" ({task['details']})" if task.get("details") else ""
            output = f" → {task['output']}" if task.get("output") else ""
            shown.append(f"{task.get('title', '')}{details}: {task.get('status', '')}{output}")
        return shown

    @property
    def visible(self) -> str:
        """The text a person sees: markdown_text, else markdown blocks, else `text`."""
        if self.markdown_text is not None:
            return self.markdown_text
        if self.blocks:
            parts = [b.get("text", "") for b in self.blocks if b.get("type") == "markdown"]
            if parts:
                return "\n".join(str(p) for p in parts)
        return self.text

    def to_api(self) -> dict[str, Any]:
        """The message as conversations.replies returns it."""
        out: dict[str, Any] = {"type": "message", "ts": self.ts, "user": self.user}
        out["text"] = self.visible
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.bot_id:
            out["bot_id"] = self.bot_id
            out["app_id"] = "A0FAKEAPP"
        if self.blocks is not None:
            out["blocks"] = self.blocks
        if self.files:
            out["files"] = self.files
            out["subtype"] = "file_share"
        return out


@dataclass
class File:
    """A file someone shared: its bytes are served at `url_private`, to the bot token only."""

    id: str
    name: str
    mimetype: str
    data: bytes
    url_private: str
    deleted: bool = False
    redirect_to: str = ""  # the file host answers the bot's download with a redirect here

    def to_api(self) -> dict[str, Any]:
        if self.deleted:
            return {"id": self.id, "mode": "tombstone", "name": "", "mimetype": "", "size": 0}
        return {
            "id": self.id,
            "name": self.name,
            "title": self.name,
            "mimetype": self.mimetype,
            "filetype": self.name.rsplit(".", 1)[-1],
            "size": len(self.data),
            "mode": "hosted",
            "url_private": self.url_private,
            "url_private_download": self.url_private + "?download=1",
        }


@dataclass
class User:
    id: str
    name: str
    real_name: str = ""
    display_name: str = ""
    is_admin: bool = False
    is_owner: bool = False
    is_bot: bool = False
    team_id: str = ""

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.name,
            "real_name": self.real_name or self.name,
            "is_admin": self.is_admin,
            "is_owner": self.is_owner,
            "is_bot": self.is_bot,
            "deleted": False,
            "profile": {
                "real_name": self.real_name or self.name,
                "display_name": self.display_name,
            },
        }


class SlidingWindow:
    """At most `limit` accepted calls in any `per` seconds, like Slack's rate tiers."""

    def __init__(self, limit: int, per: float) -> None:
        self.limit = limit
        self.per = per
        self._times: deque[float] = deque()

    def try_take(self, now: float) -> float:
        """Take a slot and return 0, or return the seconds until one frees up."""
        while self._times and now - self._times[0] >= self.per:
            self._times.popleft()
        if len(self._times) < self.limit:
            self._times.append(now)
            return 0.0
        return self._times[0] + self.per - now


@dataclass(frozen=True)
class RateLimit:
    """A limit on one method; `scope` is "workspace" or "channel"."""

    method: str
    limit: int
    per: float
    scope: str = "workspace"


class Limiter:
    """The switchable rate limits; one sliding window per (method, scope key)."""

    def __init__(self) -> None:
        self.rules: dict[str, RateLimit] = {}
        self._windows: dict[tuple[str, str], SlidingWindow] = {}

    def set(self, rule: RateLimit) -> None:
        self.rules[rule.method] = rule
        self._windows = {k: w for k, w in self._windows.items() if k[0] != rule.method}

    def clear(self) -> None:
        self.rules.clear()
        self._windows.clear()

    def check(self, method: str, channel: str, now: float) -> int | None:
        """None if allowed, else the Retry-After seconds (whole, at least 1, as Slack sends)."""
        rule = self.rules.get(method)
        if rule is None:
            return None
        key = (method, channel if rule.scope == "channel" else "")
        window = self._windows.setdefault(key, SlidingWindow(rule.limit, rule.per))
        wait = window.try_take(now)
        if wait <= 0:
            return None
        return max(1, math.ceil(wait))


class TsClock:
    """Message timestamps like Slack's: seconds.micro, strictly increasing."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._last = 0.0

    def next(self) -> str:
        now = max(time.time(), self._last + 0.000001)
        self._last = now
        next(self._counter)
        return f"{now:.6f}"


class Channels:
    """Every channel's messages, keyed by ts."""

    def __init__(self) -> None:
        self.by_channel: dict[str, dict[str, Message]] = {}

    def add(self, message: Message) -> Message:
        self.by_channel.setdefault(message.channel, {})[message.ts] = message
        message.history.append(message.visible)
        return message

    def get(self, channel: str, ts: str) -> Message | None:
        return self.by_channel.get(channel, {}).get(ts)

    def delete(self, channel: str, ts: str) -> bool:
        return self.by_channel.get(channel, {}).pop(ts, None) is not None

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The parent and its replies, oldest first (what conversations.replies returns)."""
        found = [
            m
            for m in self.by_channel.get(channel, {}).values()
            if m.ts == thread_ts or m.thread_ts == thread_ts
        ]
        return sorted(found, key=lambda m: float(m.ts))

    def all(self) -> list[Message]:
        return [m for msgs in self.by_channel.values() for m in msgs.values()]
