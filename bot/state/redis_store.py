"""The Redis implementation of `bot.state.interface.Store`: every redis-py call of the core's
state is here (docs/architecture.md, "State and the Redis layout").

Values cross the interface already encoded (history entries as JSON strings, personas
as flat hashes): what they mean is the callers' (`bot.conversations.history`,
`bot.conversations.personas`, …), where they live and how many round trips they cost is this module's.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from typing import Any, TypeVar

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster

from bot.state.interface import Bounds, Client, LimitsRead, Pipeline, Queued, RateRead, TurnStart
from bot.state.keys import CHANNEL, USAGE_KINDS, ChannelScope, ConversationKey, Keys

LOCK_MS = 30_000  # short, so a crashed process frees the conversation quickly

# Take the lock, append the user's message, read the history: one script, one slot (the
# conversation's hash tag). False: another answer holds the lock.
_BEGIN = """
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
return redis.call('LRANGE', KEYS[1], 0, -1)
"""

_FINISH = """
if ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[1], ARGV[4])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""

_NOTE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# One vote per person per answer: read the answer's record, replace the vote, move the totals.
_VOTE = """
local record = redis.call('HGETALL', KEYS[1])
if #record == 0 then return false end
local before, kept = '', ''
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  local decoded = cjson.decode(old)
  before = decoded['value'] or ''
  kept = decoded['reason'] or ''
end
local reason = ARGV[3]
if reason == '' and before == ARGV[2] then reason = kept end
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode({value = ARGV[2], reason = reason, at = tonumber(ARGV[4])}))
redis.call('EXPIRE', KEYS[2], ARGV[5])
if before ~= ARGV[2] then
  local fields = {}
  for i = 1, #record, 2 do fields[record[i]] = record[i + 1] end
  local base = (fields['platform'] or '') .. '|' .. (fields['persona'] or '') .. '|'
    .. (fields['model'] or '') .. '|'
  if before ~= '' then redis.call('HINCRBY', KEYS[3], base .. before, -1) end
  redis.call('HINCRBY', KEYS[3], base .. ARGV[2], 1)
end
return {record, before}
"""

# A person's edited message: find its entry (the newest user entry with that msg_id); rewind
# the history to before it when asked and it is the last person's message and no answer holds
# the lock (the caller answers it again), else give it the new content.
_REVISE = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local function entry(i)
  local ok, e = pcall(cjson.decode, items[i])
  if ok and type(e) == 'table' then return e end
  return nil
end
local at = nil
for i = #items, 1, -1 do
  local e = entry(i)
  if e and e['role'] == 'user' and e['msg_id'] == ARGV[1] then at = i break end
end
if not at then return false end
local last = true
for j = at + 1, #items do
  local e = entry(j)
  if e and e['role'] == 'user' then last = false break end
end
if ARGV[3] == '1' and last and redis.call('EXISTS', KEYS[2]) == 0 then
  if at == 1 then redis.call('DEL', KEYS[1]) else redis.call('LTRIM', KEYS[1], 0, at - 2) end
  local out = {'rewound'}
  for j = at, #items do out[#out + 1] = items[j] end
  return out
end
local e = entry(at)
e['content'] = ARGV[2]
redis.call('LSET', KEYS[1], at - 1, cjson.encode(e))
return {'edited'}
"""

# A person's deleted message: drop its entry.
_REMOVE = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
for i = #items, 1, -1 do
  local ok, e = pcall(cjson.decode, items[i])
  if ok and type(e) == 'table' and e['role'] == 'user' and e['msg_id'] == ARGV[1] then
    return redis.call('LREM', KEYS[1], -1, items[i])
  end
end
return 0
"""

# Files the model could not take (bot/model/request_size.py): noted, so no later turn sends them again.
_LEAVE_OUT = """
local wanted = {}
for i = 2, #ARGV do wanted[ARGV[i]] = true end
local items = redis.call('LRANGE', KEYS[1], 0, -1)
for i = 1, #items do
  local ok, e = pcall(cjson.decode, items[i])
  if ok and type(e) == 'table' and type(e['attachments']) == 'table' then
    local changed = false
    for _, a in ipairs(e['attachments']) do
      if type(a) == 'table' and wanted[a['ref']] and not a['note'] then a['note'] = ARGV[1] changed = true end
    end
    if changed then redis.call('LSET', KEYS[1], i - 1, cjson.encode(e)) end
  end
end
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


# Take the lease if free, renew it if ours; otherwise return who holds it.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    def __init__(self, client: Client, prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self._renew = client.register_script(_RENEW)
        self._note = client.register_script(_NOTE)
        self._vote = client.register_script(_VOTE)
        self._revise = client.register_script(_REVISE)
        self._remove = client.register_script(_REMOVE)
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)

    def pipeline(self) -> Pipeline:
        return self.client.pipeline(transaction=False)

    async def send(self, *queued: Queued) -> list[Any]:
        """Whatever `queued` adds to a pipeline, in one round trip (none if it adds nothing)."""
        async with self.pipeline() as pipe:
            for queue in queued:
                queue(pipe)
            if not len(pipe):
                return []
            return await pipe.execute()

    # ---- leases ---------------------------------------------------------------------------

    async def hold_lease(self, name: str, holder: str, ttl_ms: int) -> str | None:
        other = await self._hold(keys=[self.keys.lease(name)], args=[holder, ttl_ms])
        return str(other) if other else None

    async def release_lease(self, name: str, holder: str) -> None:
        await self._release(keys=[self.keys.lease(name)], args=[holder])

    # ---- claims ---------------------------------------------------------------------------

    async def claim(self, platform: str, event_id: str, ttl: int) -> bool:
        return bool(await self.client.set(self.keys.seen(platform, event_id), "1", nx=True, ex=ttl))

    # ---- a conversation ---------------------------------------------------------------------

    async def start_turn(
        self, conversation: ConversationKey, token: str, user: str, bounds: Bounds, *,
        pending: Sequence[str] = (), ops: Sequence[Queued] = (), persona: ChannelScope | None = None,
    ) -> TurnStart:
        history, lock = self.keys.history(conversation), self.keys.lock(conversation)
        async with self.pipeline() as pipe:
            # What an earlier turn could not store goes first, where the history exists
            # (else the platform's thread brings it back with the rest).
            for entry in pending:
                pipe.eval(_NOTE, 1, history, entry, bounds.max_turns, bounds.ttl)
            for queue in ops:
                queue(pipe)
            catch_up = len(pipe)  # results to skip: a queue may add several
            # EVAL rather than EVALSHA: a pipeline cannot fall back on NOSCRIPT, and
            # Redis caches the compiled script either way.
            pipe.eval(_BEGIN, 2, history, lock, token, LOCK_MS, user, bounds.max_turns, bounds.ttl)
            if persona is not None:
                pipe.hgetall(self.keys.persona(persona))
            results: list[Any] = await pipe.execute()
        raw, *read = results[catch_up:]
        entries = None if raw is None else [str(r) for r in raw]
        return TurnStart(entries, read[0] if read else {})

    async def finish_turn(
        self, conversation: ConversationKey, token: str, answer: str, bounds: Bounds,
        deferred: Sequence[Queued] = (),
    ) -> None:
        history, lock = self.keys.history(conversation), self.keys.lock(conversation)
        async with self.pipeline() as pipe:
            pipe.eval(_FINISH, 2, history, lock, token, bounds.max_turns, bounds.ttl, answer)
            for queue in deferred:
                queue(pipe)
            await pipe.execute()

    def unlock(self, conversation: ConversationKey, token: str) -> Queued:
        lock = self.keys.lock(conversation)
        return lambda pipe: pipe.eval(_UNLOCK, 1, lock, token)

    def leave_out(self, conversation: ConversationKey, refs: Sequence[str], note: str) -> Queued:
        history = self.keys.history(conversation)
        return lambda pipe: pipe.eval(_LEAVE_OUT, 1, history, note, *refs)

    async def renew_lock(self, conversation: ConversationKey, token: str) -> bool:
        return bool(await self._renew([self.keys.lock(conversation)], [token, LOCK_MS]))

    async def prepend(self, conversation: ConversationKey, entries: Sequence[str], bounds: Bounds) -> None:
        key = self.keys.history(conversation)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lpush(key, *reversed(entries))
            pipe.ltrim(key, -bounds.max_turns, -1)
            pipe.expire(key, bounds.ttl)
            await pipe.execute()

    async def note(self, conversation: ConversationKey, entry: str, bounds: Bounds) -> bool:
        keys = [self.keys.history(conversation)]
        return bool(await self._note(keys, [entry, bounds.max_turns, bounds.ttl]))

    async def exists(self, conversation: ConversationKey) -> bool:
        return bool(await self.client.exists(self.keys.history(conversation)))

    async def load(self, conversation: ConversationKey) -> list[str]:
        raw: list[str] = await self.client.lrange(self.keys.history(conversation), 0, -1)  # type: ignore[assignment]
        return raw

    async def revise(
        self, conversation: ConversationKey, message_id: str, content: str, rewind: bool
    ) -> list[str] | None:
        keys = [self.keys.history(conversation), self.keys.lock(conversation)]
        result = await self._revise(keys, [message_id, content, "1" if rewind else "0"])
        if not result:
            return None
        return [_text(r) for r in result[1:]]

    async def context(self, conversation: ConversationKey) -> dict[str, str]:
        raw = await self.client.hgetall(self.keys.context(conversation))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def save_context(self, conversation: ConversationKey, fields: dict[str, str], ttl: int) -> None:
        key = self.keys.context(conversation)
        async with self.pipeline() as pipe:
            pipe.hset(key, mapping=dict(fields))  # type: ignore[arg-type]  # redis-py: Mapping is invariant
            pipe.expire(key, ttl)
            await pipe.execute()

    async def remove(self, conversation: ConversationKey, message_id: str) -> bool:
        return bool(await self._remove([self.keys.history(conversation)], [message_id]))

    async def forget(self, conversation: ConversationKey, marker: str, bounds: Bounds) -> list[str]:
        key = self.keys.history(conversation)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            pipe.rpush(key, marker)
            pipe.expire(key, bounds.ttl)
            before, *_ = await pipe.execute()
        return [str(r) for r in before]

    # ---- personas ---------------------------------------------------------------------------

    async def persona(self, scope: ChannelScope) -> dict[str, str]:
        data: dict[str, str] = await self.client.hgetall(self.keys.persona(scope))  # type: ignore[assignment]
        return data

    async def save_persona(self, scope: ChannelScope, fields: dict[str, str]) -> None:
        key = self.keys.persona(scope)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=dict(fields))  # type: ignore[arg-type]  # redis-py: Mapping is invariant
            await pipe.execute()

    async def reset_persona(self, scope: ChannelScope) -> None:
        await self.client.delete(self.keys.persona(scope))

    # ---- limits -----------------------------------------------------------------------------

    async def read_limits(
        self, rate: tuple[str, float, float] | None, tokens: tuple[ChannelScope, str] | None,
        persona: ChannelScope,
    ) -> LimitsRead:
        async with self.pipeline() as pipe:
            if rate is not None:
                _count_in_window(pipe, *rate)
            if tokens is not None:
                scope, day = tokens
                pipe.hmget(self.keys.usage(day, CHANNEL), [f"{_scope(scope)}|in", f"{_scope(scope)}|out"])
            pipe.hgetall(self.keys.persona(persona))
            results: list[Any] = await pipe.execute()
        # Named here, not sliced by position by the caller: each part comes off in order.
        hash_read: dict[str, str] = results.pop()
        rate_read: RateRead | None = None
        if rate is not None:
            _, _, count, oldest, _ = results[:5]
            results = results[5:]
            rate_read = RateRead(int(count), float(oldest[0][1]) if oldest else None)
        channel_tokens: int | None = None
        if tokens is not None:
            channel_tokens = sum(int(v) for v in results[0] if v)
        return LimitsRead(rate_read, channel_tokens, hash_read)

    async def take_in_window(self, key: str, now: float, window: float, limit: int) -> bool:
        async with self.pipeline() as pipe:
            member = _count_in_window(pipe, key, now, window)
            _, _, count, _, _ = await pipe.execute()
        if int(count) <= limit:
            return True
        await self.client.zrem(key, member)  # only when refused: one more trip, rarely
        return False

    # ---- usage ------------------------------------------------------------------------------

    async def read_usage(
        self, days: Sequence[str]
    ) -> tuple[list[dict[str, dict[str, str]]], dict[str, str]]:
        async with self.pipeline() as pipe:
            for day in days:
                for kind in USAGE_KINDS:
                    pipe.hgetall(self.keys.usage(day, kind))
            pipe.hgetall(self.keys.usage_names)
            results: list[Any] = await pipe.execute()
        names: dict[str, str] = results.pop()
        hashes = iter(results)
        return [{kind: next(hashes) for kind in USAGE_KINDS} for _ in days], names

    # ---- feedback ---------------------------------------------------------------------------

    def remember_answer(self, answer_id: str, fields: dict[str, str], ttl: int) -> Queued:
        key = self.keys.feedback_answer(answer_id)

        def queue(pipe: Pipeline) -> None:
            pipe.hset(key, mapping=dict(fields))  # type: ignore[arg-type]  # redis-py: Mapping is invariant
            pipe.expire(key, ttl)

        return queue

    async def vote(
        self, answer_id: str, user_id: str, value: str, reason: str, at: float, ttl: int
    ) -> tuple[dict[str, str], str] | None:
        k = self.keys
        keys = [k.feedback_answer(answer_id), k.feedback_votes(answer_id), k.feedback_totals]
        result = await self._vote(keys=keys, args=[user_id, value, reason, at, ttl])
        if not result:
            return None
        flat, before = result
        record = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
        return record, _text(before)

    async def feedback_totals(self) -> dict[str, str]:
        raw = await self.client.hgetall(self.keys.feedback_totals)
        return {_text(k): _text(v) for k, v in raw.items()}

    # ---- answers in flight ------------------------------------------------------------------

    async def close_owner(self, owner: str) -> None:
        async with self.pipeline() as pipe:
            pipe.delete(self.keys.heartbeat(owner))
            pipe.exists(self.keys.inflight(owner))
            _, left = await pipe.execute()
        if not left:
            await self.client.srem(self.keys.owners, owner)

    async def owners(self) -> set[str]:
        members = await self.client.smembers(self.keys.owners)
        return {str(o) for o in members}

    async def alive(self, owners: Sequence[str]) -> list[bool]:
        async with self.pipeline() as pipe:
            for owner in owners:
                pipe.exists(self.keys.heartbeat(owner))
            return [bool(a) for a in await pipe.execute()]

    async def records(self, owner: str) -> dict[str, str]:
        raw = await self.client.hgetall(self.keys.inflight(owner))
        return {str(k): str(v) for k, v in raw.items()}

    async def take_record(self, owner: str, answer_id: str) -> bool:
        # HDEL answers 1 to exactly one process: two replicas never take a record twice.
        return bool(await self.client.hdel(self.keys.inflight(owner), answer_id) == 1)

    async def drop_owner(self, owner: str) -> None:
        await self.client.srem(self.keys.owners, owner)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _scope(scope: ChannelScope) -> str:
    return f"{scope.platform}:{scope.workspace}:{scope.channel}"


_Part = TypeVar("_Part")  # the part of the interface a module asks for


def as_store(client: Client | _Part, prefix: str) -> RedisStore | _Part:
    """A module built on a bare client (tests, the command line) gets a store over it."""
    return RedisStore(client, prefix) if isinstance(client, (redis.Redis, RedisCluster)) else client


def _count_in_window(pipe: Pipeline, key: str, now: float, window: float) -> str:
    """Queue: drop what left the window, add one entry at `now`, then read the count and the
    oldest entry (five results). Returns the entry added."""
    member = f"{now:.6f}:{secrets.token_hex(3)}"
    pipe.zremrangebyscore(key, "-inf", now - window)
    pipe.zadd(key, {member: now})
    pipe.zcard(key)
    pipe.zrange(key, 0, 0, withscores=True)
    pipe.expire(key, math.ceil(window) + 1)
    return member
