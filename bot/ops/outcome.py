"""What happened to one turn (`Outcome`): logged as one line, counted in metrics, handed to
the engine's outcome hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.delivery.reply import ReplyStream


@dataclass
class Outcome:
    """What happened to one turn; logged as one line, counted in metrics."""

    conversation: str
    platform: str = ""
    scope: str = ""  # the channel scope, "platform:workspace:channel"
    author: str = ""  # the author's platform id
    outcome: str = "ok"  # ok | interrupted | error | rejected | ignored | limited | stopped
    persona: str = ""
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    tool_calls: int = 0  # MCP tool calls the model made (bot/tools/)
    tool_servers: dict[str, int] = field(default_factory=dict)  # those calls per server, for `usage`
    intake_s: float | None = None  # message received → model request sent
    first_token_s: float | None = None  # model request sent → first answer token
    total_s: float = 0.0  # message received → the turn is over
    error: str = ""
    degraded: bool = False  # answered without Redis
    reply: ReplyStream | None = field(default=None, repr=False)
    # A Stop press (`Engine.stop`): when it came and when the model stream was cut (monotonic).
    stop_pressed_at: float | None = None
    stream_cut_at: float | None = None

    @property
    def ttft_s(self) -> float | None:
        """Message received → first answer token."""
        if self.intake_s is None or self.first_token_s is None:
            return None
        return self.intake_s + self.first_token_s

    @property
    def wrote_final(self) -> bool:
        return self.reply is not None and self.reply.final_at is not None


TurnHook = Callable[[Outcome], Awaitable[None] | None]
