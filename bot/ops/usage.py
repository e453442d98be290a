"""Token usage per channel and per user per day, kept in Redis; the `python -m bot usage` table.

Keys (one hash per UTC day and kind, each kept `USAGE_TTL_DAYS` days):

    {prefix}:usage:{YYYY-MM-DD}:channel   "<platform>:<workspace>:<channel>|in" / "|out" / "|answers"
                                          / "|tools" (MCP tool calls)
    {prefix}:usage:{YYYY-MM-DD}:user      "<platform>:<user id>|in" / "|out" / "|answers" / "|tools"
    {prefix}:usage:{YYYY-MM-DD}:persona   "<persona preset, or custom>|in" / "|out" / "|answers" / "|tools"
    {prefix}:usage:{YYYY-MM-DD}:server    "<MCP server>|tools" (calls of a tool not offered: "(no such tool)")
    {prefix}:usage:names                  "<platform>:<user id>" -> display name (for the table)

Counting costs no Redis round trip of its own while the process's upkeep runs
(`bot.ops.upkeep`): `add` only counts in memory and the upkeep puts every pending
increment into the one pipeline it sends each second. Without the upkeep
(`python -m bot chat`), the engine writes each answer's usage right away.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from bot.contract import Author, ChannelScope
from bot.state.interface import Client, Pipeline, UsageState
from bot.state.keys import CHANNEL, PERSONA, SERVER, USER
from bot.state.redis_store import as_store

log = logging.getLogger(__name__)

USAGE_TTL_DAYS = 35  # "some weeks": enough for a monthly look back
FIELDS = ("in", "out", "answers", "tools")  # tools: MCP tool calls (bot/tools/)


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def user_id(platform: str, author: Author) -> str:
    return f"{platform}:{author.id}"


@dataclass
class Spend:
    tokens_in: int = 0
    tokens_out: int = 0
    answers: int = 0
    tool_calls: int = 0

    @property
    def total(self) -> int:
        return self.tokens_in + self.tokens_out

    def add(self, other: Spend) -> None:
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.answers += other.answers
        self.tool_calls += other.tool_calls


# (day, kind, who) -> what was spent and not yet written
Pending = dict[tuple[str, str, str], Spend]


class Usage:
    def __init__(self, store: UsageState | Client, prefix: str, ttl_days: int = USAGE_TTL_DAYS) -> None:
        self._store: UsageState = as_store(store, prefix)
        self._keys = self._store.keys
        self.ttl = ttl_days * 86400
        self.batched = False  # True while an upkeep flushes the pending counts
        self._pending: Pending = defaultdict(Spend)
        self._names: dict[str, str] = {}

    def key(self, day: str, kind: str) -> str:
        return self._keys.usage(day, kind)

    @property
    def names_key(self) -> str:
        return self._keys.usage_names

    # ---- counting -------------------------------------------------------------------

    def add(
        self, scope: ChannelScope, author: Author, tokens_in: int, tokens_out: int, tool_calls: int = 0,
        persona: str = "", servers: Mapping[str, int] | None = None,
    ) -> None:
        """Count one answer's tokens and tool calls for its channel, its author and its persona,
        and its tool calls per MCP server (in memory)."""
        day = today()
        spend = Spend(tokens_in, tokens_out, 1, tool_calls)
        self._pending[(day, CHANNEL, str(scope))].add(spend)
        who = user_id(scope.platform, author)
        self._pending[(day, USER, who)].add(spend)
        if persona:
            self._pending[(day, PERSONA, persona)].add(spend)
        for server, calls in (servers or {}).items():
            self._pending[(day, SERVER, server)].add(Spend(tool_calls=calls))
        if author.name:
            self._names[who] = author.name

    def pending_tokens(self, day: str, kind: str, who: str) -> int:
        """Tokens counted here and not yet written (the budget check adds them)."""
        spend = self._pending.get((day, kind, who))
        return spend.total if spend else 0

    def take(self) -> tuple[Pending, dict[str, str]]:
        """Everything pending, handed over for writing (`restore` it if the write fails)."""
        batch, names = dict(self._pending), dict(self._names)
        self._pending.clear()
        self._names.clear()
        return batch, names

    def restore(self, batch: tuple[Pending, dict[str, str]]) -> None:
        pending, names = batch
        for k, spend in pending.items():
            self._pending[k].add(spend)
        self._names = names | self._names

    def queue(self, pipe: Pipeline, batch: tuple[Pending, dict[str, str]]) -> None:
        """Add the increments of `batch` to a pipeline."""
        pending, names = batch
        keys: set[str] = set()
        for (day, kind, who), spend in pending.items():
            key = self.key(day, kind)
            keys.add(key)
            amounts = (spend.tokens_in, spend.tokens_out, spend.answers, spend.tool_calls)
            for name, amount in zip(FIELDS, amounts, strict=True):
                if amount:
                    pipe.hincrby(key, f"{who}|{name}", amount)
        if names:
            pipe.hset(self.names_key, mapping=dict(names))  # type: ignore[arg-type]  # redis-py: Mapping is invariant
            keys.add(self.names_key)
        for key in sorted(keys):
            pipe.expire(key, self.ttl)

    async def flush(self) -> None:
        """Write what is pending now (one round trip; nothing when nothing is pending)."""
        batch = self.take()
        if not batch[0]:
            return
        try:
            await self._store.send(lambda pipe: self.queue(pipe, batch))
        except Exception:
            self.restore(batch)
            raise

    # ---- reading --------------------------------------------------------------------

    async def report(self, days: int, until: date | None = None) -> Report:
        """What was spent over the last `days` UTC days (today included)."""
        last = until or datetime.now(UTC).date()
        span = [(last - timedelta(days=n)).isoformat() for n in range(days)][::-1]
        by_day, names = await self._store.read_usage(span)
        report = Report(days=span, names=names)
        for day, hashes in zip(span, by_day, strict=True):
            for kind, raw in hashes.items():
                for spent_by, value in _parse(raw).items():
                    report.add(day, kind, spent_by, value)
        return report


def _parse(raw: dict[str, str]) -> dict[str, Spend]:
    """`{"who|in": "12", "who|out": "3", …}` -> {who: Spend}."""
    out: dict[str, Spend] = defaultdict(Spend)
    for name, value in raw.items():
        who, _, part = name.rpartition("|")
        try:
            amount = int(value)
        except ValueError:
            continue
        spend = out[who]
        if part == "in":
            spend.tokens_in += amount
        elif part == "out":
            spend.tokens_out += amount
        elif part == "answers":
            spend.answers += amount
        elif part == "tools":
            spend.tool_calls += amount
    return out


@dataclass
class Report:
    days: list[str]
    names: dict[str, str] = field(default_factory=dict)
    by_day: dict[str, Spend] = field(default_factory=lambda: defaultdict(Spend))
    by_channel: dict[str, Spend] = field(default_factory=lambda: defaultdict(Spend))
    by_user: dict[str, Spend] = field(default_factory=lambda: defaultdict(Spend))
    by_persona: dict[str, Spend] = field(default_factory=lambda: defaultdict(Spend))
    by_server: dict[str, Spend] = field(default_factory=lambda: defaultdict(Spend))

    def add(self, day: str, kind: str, who: str, spend: Spend) -> None:
        if kind == CHANNEL:
            self.by_day[day].add(spend)  # every answer has exactly one channel
            self.by_channel[who].add(spend)
        elif kind == USER:
            self.by_user[who].add(spend)
        elif kind == PERSONA:
            self.by_persona[who].add(spend)
        elif kind == SERVER:
            self.by_server[who].add(spend)

    def table(self) -> str:
        first, last = self.days[0], self.days[-1]
        span = first if first == last else f"{first} to {last}"
        lines = [f"Token usage, {span} (UTC days)", ""]
        if not self.by_day:
            lines.append("No answers in this period.")
            return "\n".join(lines)
        day_rows = [(day, self.by_day.get(day) or Spend()) for day in self.days]
        lines += _section("day", day_rows, total=True)
        channels = sorted(self.by_channel.items(), key=lambda kv: -kv[1].total)
        lines += ["", *_section("channel", channels)]
        users = [(self._user_label(who), spend) for who, spend in self.by_user.items()]
        lines += ["", *_section("user", sorted(users, key=lambda kv: -kv[1].total))]
        if self.by_persona:  # counted since tools came in (issue 22): older days have none
            personas = sorted(self.by_persona.items(), key=lambda kv: -kv[1].total)
            lines += ["", *_section("persona", personas)]
        if self.by_server:
            servers = sorted(self.by_server.items(), key=lambda kv: (-kv[1].tool_calls, kv[0]))
            lines += ["", *_calls_section("tool server", servers)]
        return "\n".join(lines)

    def _user_label(self, who: str) -> str:
        name = self.names.get(who)
        return f"{name} ({who})" if name else who


def _section(title: str, rows: Iterable[tuple[str, Spend]], total: bool = False) -> list[str]:
    rows = list(rows)
    width = max(len(title), *(len(label) for label, _ in rows), len("total"))
    head = (f"{title:<{width}}  {'answers':>8}  {'tokens in':>12}  {'tokens out':>12}  {'total':>12}"
            f"  {'tool calls':>10}")

    def line(label: str, s: Spend) -> str:
        return (f"{label:<{width}}  {s.answers:>8,}  {s.tokens_in:>12,}  {s.tokens_out:>12,}  {s.total:>12,}"
                f"  {s.tool_calls:>10,}")

    out = [head, "-" * len(head), *(line(label, spend) for label, spend in rows)]
    if total:
        whole = Spend()
        for _, spend in rows:
            whole.add(spend)
        out += ["-" * len(head), line("total", whole)]
    return out


def _calls_section(title: str, rows: list[tuple[str, Spend]]) -> list[str]:
    """Rows that only have tool calls (an MCP server spends no tokens of its own)."""
    width = max(len(title), *(len(label) for label, _ in rows))
    head = f"{title:<{width}}  {'tool calls':>10}"
    return [head, "-" * len(head), *(f"{label:<{width}}  {s.tool_calls:>10,}" for label, s in rows)]
