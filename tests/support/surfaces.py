"""An in-memory ReplySurface that records every write, for core tests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bot.contract import Controls, SurfaceLimits, SurfaceRateLimited


@dataclass
class Write:
    kind: str  # post | edit | status
    message_id: str
    text: str
    at: float
    controls: Controls | None = None


@dataclass
class RecordingSurface:
    limits: SurfaceLimits = field(
        default_factory=lambda: SurfaceLimits(max_chars=4000, min_edit_interval=0.05)
    )
    writes: list[Write] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)
    controls: dict[str, Controls | None] = field(default_factory=dict)  # what each message carries
    fail_edits: int = 0  # the next N edits answer 429…
    retry_after: float = 0.05  # …with this Retry-After
    fail_posts: int = 0  # the next N posts raise a plain error

    async def post(self, text: str, *, complete: bool = False, controls: Controls | None = None) -> str:
        if self.fail_posts:
            self.fail_posts -= 1
            raise RuntimeError("platform unavailable")
        message_id = f"m{len(self.messages) + 1}"
        self.messages[message_id] = text
        self.controls[message_id] = controls
        self.writes.append(Write("post", message_id, text, time.monotonic(), controls))
        return message_id

    async def edit(self, message_id: str, text: str, *, controls: Controls | None = None) -> None:
        if self.fail_edits:
            self.fail_edits -= 1
            raise SurfaceRateLimited(self.retry_after)
        assert message_id in self.messages, f"edit of unknown message {message_id}"
        self.messages[message_id] = text
        self.controls[message_id] = controls
        self.writes.append(Write("edit", message_id, text, time.monotonic(), controls))

    async def delete(self, message_id: str) -> None:
        self.messages.pop(message_id)
        self.writes.append(Write("delete", message_id, "", time.monotonic()))

    async def set_status(self, status: str | None) -> None:
        self.writes.append(Write("status", "", status or "", time.monotonic()))

    @property
    def text(self) -> str:
        """What a user sees: every message, in order."""
        return "\n".join(self.messages.values())

    @property
    def platform_writes(self) -> list[Write]:
        return [w for w in self.writes if w.kind != "status"]
