"""Platform write budgets, shared by every live answer and every process of the bot.

Slack allows about 50 `chat.update` calls a minute per workspace; Discord about
5 edits per 5 seconds per channel and 50 requests a second per bot. Those are
budgets for *all* live answers in that scope, and for every replica of the bot
together, so each is one `Window` kept in Redis (one Lua script per platform
write, never one per token) that every reply stream draws from.

The rules (docs/architecture.md, "Pacing"):

1. **A final never waits long on a long window.** Before an answer shows its first
   words, it *reserves* one slot for the final edit of that message in every
   long window (over `SHORT_WINDOW`: Slack's minute, Discord's 5 s per channel).
   A reservation counts as used until the final spends it, so later writes can
   never take it away. Writes that leave the window within `FINAL_WAIT_MAX` count
   as gone for a reservation (a follow-up in a Discord channel still holding the
   last answer's edits shows at once); a final that comes before they left waits
   for them, at most that long. No reservation, no early post: the answer shows its
   status ("is thinking…", typing) and posts its whole text with one new message
   when the stream ends (a different budget). Each message of a long answer
   reserves its own final.
2. **In a short window a write waits at most the window** (about a second:
   Discord's bot-wide budget, Slack's posts per channel). Finals go first: other
   writes leave room for the live answers' finals (at most half the window), and
   a process queues its waiting writes by priority.
3. **Progress is the first thing to give up.** A progress edit is taken only
   when the window, after every reservation, keeps `headroom` free (a fifth of
   a window of ten writes or more, for answers about to start; a short window
   keeps at most half for the live answers); and each answer spaces its edits by
   `per × live / (limit − spare − kept)`, the writes left to progress shared by
   the live answers (1.2 s alone under Slack's 50 a minute, 1.7 s alone in a
   Discord channel, further apart when many are live), so the budget is spent
   evenly over the window instead of in a burst and then a wait. A refused
   reservation or progress edit says when the window next has room (`wait`).
4. **A 429 slows everyone in scope.** `throttle` blocks the window for
   Retry-After and narrows its limit (×`NARROW`). A window with room to learn
   (`most` above `limit`, e.g. Slack's "50+ per minute") grows by one when a
   reservation finds it full and the platform has refused nothing for a whole
   period (counted from the window's first use): it starts from the documented
   figure and finds the real one. A reserved final that meets
   a block longer than `FINAL_WAIT_MAX` is not held up: the reply stream posts the
   whole text anew and deletes the partial message (see `bot.delivery.reply`).

5. **When edits cannot keep an answer moving, its text goes on in parts**
   (docs/slack.md, "Busy workspaces: answers in parts"). Edit budgets are per workspace
   (Slack) and do not grow with the answers: 20 conversations of two turns at once in one
   workspace are 40 answers of ~10 s in ~25 s, which want ~160 visible changes (one per
   2.5 s each) and a final each, where `chat.update` gives ~21 in 25 s (50 a minute) and
   native streaming's `appendStream` ~42 (100 a minute) with 20 starts and stops a minute.
   Posting is budgeted per channel (about 1 a second each), so it grows with the channels
   the answers are in. So an answer on a surface that allows parts (`SurfaceLimits.parts`)
   whose edits would come further apart than `EDIT_SPACING_MAX` (the pacer's spacing: one
   edit per `per × live / (limit − spare − kept)`, 2.5 s for two answers under Slack's 50 a
   minute), or whose
   progress edit is refused, stops editing: what it shows stays as it is (its Stop button
   and reserved final kept, to take the button off at the end: one `chat.update` per
   answer, 40 for 40 answers, within the 50), and the rest of its text is posted as
   messages of their own in the thread, cut where `part_cut` says: a paragraph after 1 s
   without a visible change, else a sentence or line after 1.5 s, else a word after 2 s, at
   once where the message is full; a code fence open at a cut is closed in the part and
   reopened in the next. A part never takes all the text so far: the last one goes out when
   the model is done, carrying the feedback buttons. An answer whose final could not be
   reserved at all shows its first part 0.5 s after its first text. No text is shown twice
   or lost (each part starts where the last ended), and history stores the answer once.
   At 1 answer alone nothing changes (one message, about one edit a second).

When Redis is unreachable (the breaker the engine shares, `bot.state.breaker.RedisState`, says
so) the same script runs on an in-process store, so pacing goes on per process until
Redis answers again.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.clock import Clock, SystemClock
from bot.contract.budgets import FINAL, Grant, Window
from bot.delivery.splitting import boundaries
from bot.ops import metrics
from bot.state.breaker import RedisState
from bot.state.interface import Client, Unreachable
from bot.state.keys import Keys

log = logging.getLogger(__name__)

FINAL_WAIT_MAX = 1.0  # a final never waits longer than this on a long window
HOLD_LEASE = 120.0  # a reservation of a process that died frees itself after this
HEADROOM = 0.2  # share of a long window progress leaves free for answers about to start
NARROW = 0.7  # a 429 multiplies a learnt limit by this


# Parts (rule 5). Seconds on the pacing clock since the answer's last visible change.
EDIT_SPACING_MAX = 2.0  # edits further apart than this: the answer goes on in parts
FIRST_PART_AFTER = 0.5  # an answer showing nothing yet posts its first words after this
PARAGRAPH_AFTER = 1.0  # a complete paragraph is posted once this long without a change
SENTENCE_AFTER = 1.5  # else a complete sentence or line
WORD_AFTER = 2.0  # else the words so far (text without breaks: a long line, code)
PART_RULES = (FIRST_PART_AFTER, PARAGRAPH_AFTER, SENTENCE_AFTER, WORD_AFTER)


def part_cut(text: str, waited: float, *, first: bool, room: int) -> int | None:
    """Where the next part ends in `text` (the answer's text not shown yet), or None: wait.

    `waited` is the time since the answer's last visible change (since its first text when
    nothing is shown, `first`); `room` the characters a message can take. The cut is
    always followed by more text, so the last words go out with the final.
    """
    full = len(text) > room
    found = boundaries(text[: room + 1] if full else text)
    if first and waited >= FIRST_PART_AFTER:
        return found.paragraph or found.sentence or found.word
    if found.paragraph and waited >= PARAGRAPH_AFTER:
        return found.paragraph
    if found.sentence and waited >= SENTENCE_AFTER:
        return found.sentence
    if found.word and waited >= WORD_AFTER:
        return found.word
    if full:  # the message is full: cut now, at the best place it has, or at its end
        return found.paragraph or found.sentence or found.word or room
    return None


def next_part_check(waited: float, *, first: bool) -> float:
    """Seconds until `part_cut` may answer differently for the same text."""
    rules = (FIRST_PART_AFTER,) if first else PART_RULES[1:]
    later = [rule - waited for rule in rules if rule > waited]
    return min(later, default=PARAGRAPH_AFTER)


# KEYS: per window, its sent zset, holds zset and meta hash.
# ARGV: op, now, member, lease, extra, then per window: per, limit, most, long (1/0), spare.
# Replies {ok, wait, spacing[, the share in use of each window]}; numbers as strings
# (Lua numbers would become integers).
_PACE = """
local op, now, member, lease, extra = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5]
local n = #KEYS / 3
local w = {}
for i = 1, n do
  local sent, holds, meta = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local per, limit, most, long, spare = tonumber(ARGV[5*i+1]), tonumber(ARGV[5*i+2]),
    tonumber(ARGV[5*i+3]), ARGV[5*i+4] == '1', tonumber(ARGV[5*i+5])
  redis.call('ZREMRANGEBYSCORE', sent, '-inf', now - per)
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
  local m = redis.call('HMGET', meta, 'limit', 'blocked', 'limited', 'widened')
  w[i] = {sent = sent, holds = holds, meta = meta, per = per, most = most, long = long, spare = spare,
    limit = tonumber(m[1]) or limit, blocked = tonumber(m[2]) or 0,
    limited = tonumber(m[3]), widened = tonumber(m[4]) or 0,
    used = redis.call('ZCARD', sent), held = redis.call('ZCARD', holds),
    mine = redis.call('ZSCORE', holds, member) ~= false}
  if not w[i].limited then
    -- A window is watched for a whole period before it may grow: acceptance must be seen.
    w[i].limited = now
    redis.call('HSET', meta, 'limited', now)
    redis.call('EXPIRE', meta, 86400)
  end
end

local function spacing()
  -- A reservation's spacing is that of the windows its progress will draw on (the first
  -- `extra` ones); any other op's, of all its windows.
  local s, m = 0, n
  if op == 'reserve' and tonumber(extra) > 0 then m = math.min(n, tonumber(extra)) end
  for i = 1, m do
    -- The writes a window leaves progress in a period (its limit less the finals it keeps),
    -- shared by its live answers: even spacing, never a burst then a wait for the window.
    local x = w[i]
    local live = math.max(x.held, 1)
    local kept
    if x.long then kept = live else kept = math.min(live, math.floor(x.limit / 2)) end
    s = math.max(s, x.per * live / math.max(1, x.limit - x.spare - kept))
  end
  return tostring(s)
end

local function reply(ok)
  local r = {ok, '0', spacing()}
  for i = 1, n do r[3 + i] = tostring((w[i].used + w[i].held) / w[i].limit) end
  return r
end

local function record(x)
  local seq = redis.call('HINCRBY', x.meta, 'seq', 1)
  redis.call('ZADD', x.sent, now, seq)
  redis.call('EXPIRE', x.sent, math.ceil(x.per) + 1)
  redis.call('EXPIRE', x.meta, 86400)
end

-- Learning: a full window that may grow, and has met no 429 for a whole period, takes one
-- more (at most one step per quarter period). A 429 narrows it again (`throttle`).
local function widened(x)
  if x.most > x.limit and now - x.limited > x.per and now - x.widened > x.per / 4 then
    x.limit = x.limit + 1
    redis.call('HSET', x.meta, 'limit', x.limit, 'widened', now)
    redis.call('EXPIRE', x.meta, 86400)
    return true
  end
  return false
end

local function wait_for(x)
  if x.blocked > now then return x.blocked - now end
  local oldest = redis.call('ZRANGE', x.sent, 0, 0, 'WITHSCORES')
  if oldest[2] then return math.max(0.001, tonumber(oldest[2]) + x.per - now) end
  return x.per
end

if op == 'reserve' then
  for i = 1, n do
    local x = w[i]
    if x.long and not x.mine then
      local full = x.used + x.held >= x.limit - x.spare
      if full then
        -- Writes leaving the window within FINAL_WAIT count as gone: a final may wait that
        -- long (`use` holds it back until there is room), and a new answer shows at once.
        local soon = redis.call('ZCOUNT', x.sent, '-inf', now - x.per + FINAL_WAIT)
        full = x.used - soon + x.held >= x.limit - x.spare
      end
      if x.blocked > now or (full and not widened(x)) then
        local r = reply(0)
        r[2] = tostring(wait_for(x))  -- when it may have room again
        return r
      end
    end
  end
  for i = 1, n do
    redis.call('ZADD', w[i].holds, now + lease, member)
    redis.call('EXPIRE', w[i].holds, math.ceil(lease) + 1)
    if not w[i].mine then w[i].held = w[i].held + 1 end
  end
  return reply(1)
elseif op == 'progress' then
  for i = 1, n do
    local x = w[i]
    if x.mine then redis.call('ZADD', x.holds, 'XX', now + lease, member) end
    local kept
    if x.long then
      kept = x.held
      if x.limit >= 10 then kept = kept + math.floor(x.limit * tonumber(extra)) end
    else kept = math.min(x.held, math.floor(x.limit / 2)) end
    if x.blocked > now or x.used + kept + 1 > x.limit - x.spare then
      -- Refused: when the window will next have room (an answer may try again then, not a
      -- whole spacing later: the window's room comes back one write at a time).
      local r = reply(0)
      r[2] = tostring(wait_for(x))
      return r
    end
  end
  for i = 1, n do record(w[i]) end
  return reply(1)
elseif op == 'use' then
  -- extra = 1: a final (may take the spare slots; ends the member's presence in short windows);
  -- 2: an answer's first words (in a short window, as a final: it waits at most the window)
  local final = tonumber(extra) == 1
  local first = tonumber(extra) == 2
  local wait = 0
  for i = 1, n do
    local x = w[i]
    local room
    if x.mine and x.long then room = x.used + x.held - 1 < x.limit  -- its own slot, spare included
    elseif x.long then room = x.used + x.held < x.limit - (final and 0 or x.spare)
    elseif final or first then room = x.used < x.limit
    else room = x.used + math.min(x.held, math.floor(x.limit / 2)) < x.limit end
    if x.blocked > now then wait = math.max(wait, x.blocked - now)
    elseif not room then wait = math.max(wait, wait_for(x)) end
  end
  if wait > 0 then return {0, tostring(wait), '0'} end
  for i = 1, n do
    if w[i].mine and (w[i].long or final) then redis.call('ZREM', w[i].holds, member) end
    record(w[i])
  end
  return {1, '0', '0'}
elseif op == 'release' then
  for i = 1, n do redis.call('ZREM', w[i].holds, member) end
  return {1, '0', '0'}
elseif op == 'throttle' then
  for i = 1, n do
    local x = w[i]
    redis.call('HSET', x.meta, 'blocked', math.max(x.blocked, now + tonumber(extra)), 'limited', now,
      'limit', math.max(1, math.floor(x.limit * NARROW)))
    redis.call('EXPIRE', x.meta, 86400)
  end
  return {1, '0', '0'}
end
return redis.error_reply('unknown pacing op ' .. op)
""".replace("NARROW", repr(NARROW)).replace("FINAL_WAIT", repr(FINAL_WAIT_MAX))


@dataclass
class _Line:
    """Required writes of this process waiting on the same windows, best priority first."""

    queue: list[tuple[int, float, int]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class Pacer:
    """The shared windows: one Redis round trip per platform write (plus one per wait)."""

    def __init__(
        self,
        client: Client | None,
        prefix: str,
        clock: Clock | None = None,
        state: RedisState | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self._keys_of = Keys(prefix)  # the key module names the pacing keys (bot.state.keys)
        self._script = client.register_script(_PACE) if client is not None else None
        self._state = state or RedisState()
        self._local_script: Any = None
        self._lines: dict[tuple[str, ...], _Line] = {}
        self._tickets = itertools.count()

    @classmethod
    def local(cls, clock: Clock | None = None) -> Pacer:
        """Windows for this process alone (the console, tests of one stream)."""
        return cls(None, "local", clock)

    # -- the rules ---------------------------------------------------------------

    async def reserve(self, windows: Sequence[Window], member: str, *, progress_windows: int = 0) -> Grant:
        """Reserve one write in every long window for `member` (one message's final).

        The grant's spacing is that of the first `progress_windows` windows (those its
        progress edits draw on; all of them if 0)."""
        return await self._run("reserve", windows, member, extra=progress_windows)

    async def progress(self, windows: Sequence[Window], member: str) -> Grant:
        """Take a slot for an optional progress edit, in every window or in none."""
        return await self._run("progress", windows, member, extra=HEADROOM)

    async def release(self, windows: Sequence[Window], member: str) -> None:
        """Give back whatever `member` still holds (its answer ended another way)."""
        await self._run("release", windows, member)

    async def throttle(self, windows: Sequence[Window], retry_after: float) -> None:
        """The platform answered 429: nobody in scope writes for `retry_after` seconds."""
        await self._run("throttle", windows, "", extra=retry_after)
        for window in windows:
            metrics.pacing_throttled(window.platform, window.method)

    async def use(
        self,
        windows: Sequence[Window],
        member: str = "",
        priority: int = FINAL,
        *,
        wait: bool = True,
        order: float = 0.0,
        first: bool = False,
    ) -> bool:
        """A required write: spend `member`'s reservation, or wait for a slot.

        Waits in this process's line: best priority first, then the lowest `order`
        (the answer that started first, so one answer lands whole before the next).
        With `wait=False` (a final edit, which has another way out) returns False at
        once when a long window would keep it waiting over `FINAL_WAIT_MAX`. `first`: an
        answer's first words, which in a short window may take the room kept for the live
        answers' finals (a burst of answers starting at once would otherwise show their
        first words a window late; a final waits at most that window anyway).
        """
        if not windows:
            return True
        scopes = tuple(w.scope for w in windows)
        line = self._lines.setdefault(scopes, _Line())
        ticket = (priority, order, next(self._tickets))
        heapq.heappush(line.queue, ticket)
        try:
            while True:
                if line.queue[0] != ticket:
                    await line.changed.wait()
                    continue
                kind = 1.0 if priority == FINAL else 2.0 if first else 0.0
                grant = await self._run("use", windows, member, extra=kind)
                if grant.ok:
                    return True
                if not wait and grant.wait > FINAL_WAIT_MAX and any(w.long for w in windows):
                    return False
                await self.clock.sleep(grant.wait)
        finally:
            line.queue.remove(ticket)
            heapq.heapify(line.queue)
            line.notify()
            if not line.queue and self._lines.get(scopes) is line:
                del self._lines[scopes]  # one per channel would pile up over a bot's lifetime

    # -- Redis, or the in-process store while Redis is away ---------------------

    def _keys(self, window: Window) -> list[str]:
        # One hash tag per platform owner (workspace, bot): a write's windows share a slot.
        return self._keys_of.pace(window.scope)

    async def _run(self, op: str, windows: Sequence[Window], member: str, extra: float = 0.0) -> Grant:
        if not windows:
            return Grant(True)
        keys = [key for window in windows for key in self._keys(window)]
        args: list[str | float | int] = [op, self.clock.now(), member, HOLD_LEASE, extra]
        for window in windows:
            args += [window.per, window.limit, max(window.most, window.limit), int(window.long), window.spare]
        reply = await self._eval(keys, args)
        for window, share in zip(windows, reply[3:], strict=False):
            metrics.pacing_budget_used(window.platform, window.method, float(share))
        return Grant(reply[0] == 1, float(reply[1]), float(reply[2]))

    async def _eval(self, keys: list[str], args: list[str | float | int]) -> list[Any]:
        if self._script is not None and self._state.worth_trying:
            try:
                reply = list(await self._script(keys, args))
            except Unreachable as exc:
                self._state.failed("pacing", exc)
            except asyncio.CancelledError:  # a write that no longer waits (the stream ended)
                self._state.abandoned()
                raise
            else:
                self._state.succeeded()
                return reply
        return list(await self._local()(keys, args))

    def _local(self) -> Any:
        if self._local_script is None:
            import fakeredis  # the embedded store, already a dependency

            self._local_script = fakeredis.FakeAsyncRedis(decode_responses=True).register_script(_PACE)
        return self._local_script
