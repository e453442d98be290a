"""Which models are down, shared by every replica: one breaker per model, kept in Redis.

`MODEL_BREAKER_FAILURES` failures of a model within `MODEL_BREAKER_WINDOW` seconds open
its breaker: for `MODEL_BREAKER_OPEN_SECONDS` every replica skips it (the chain goes
straight to the next model). Then it is half open: one request, on whichever replica
comes first, probes it; an answer closes the breaker, a failure opens it again.

A turn reads the state of its whole chain in one script call and writes only when a
model fails or a probe answers, so a healthy model costs one small round trip. The same
script runs on an in-process store while Redis is away (as `bot.delivery.pacing` does), so each
process keeps its own breakers meanwhile. Times are the injected clock's wall seconds,
comparable across replicas.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from bot.clock import Clock, SystemClock
from bot.config import ChainSettings
from bot.ops import metrics
from bot.state.breaker import RedisState
from bot.state.interface import Client, Unreachable

log = logging.getLogger(__name__)

CLOSED, OPEN, PROBING, HALF_OPEN = "closed", "open", "probing", "half_open"
PROBE_LIMIT = 60.0  # a probe that never reported back frees the way for another after this long
KEY_TTL_MS = 24 * 3600 * 1000  # a model's record outlives any window or open period

_BREAKER = """
local op = ARGV[1]
local now = tonumber(ARGV[2])
if op == 'states' then
  local out = {}
  for i, key in ipairs(KEYS) do
    local v = redis.call('HMGET', key, 'open_until', 'probe_until')
    local open_until = tonumber(v[1])
    if not open_until then out[i] = 'closed'
    elseif now < open_until then out[i] = 'open'
    elseif (tonumber(v[2]) or 0) > now then out[i] = 'probing'
    else out[i] = 'half_open' end
  end
  return out
end
local key = KEYS[1]
local ttl = tonumber(ARGV[3])
if op == 'probe' then
  local v = redis.call('HMGET', key, 'open_until', 'probe_until')
  local open_until = tonumber(v[1])
  if not open_until then return 1 end
  if now < open_until or (tonumber(v[2]) or 0) > now then return 0 end
  redis.call('HSET', key, 'probe_until', now + tonumber(ARGV[4]))
  return 1
end
if op == 'succeeded' then
  redis.call('DEL', key)
  return 'closed'
end
local window, threshold, open_for = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local v = redis.call('HMGET', key, 'open_until', 'fails', 'window_until')
local open_until = tonumber(v[1])
if open_until then
  if now >= open_until then
    redis.call('HSET', key, 'open_until', now + open_for)
    redis.call('HDEL', key, 'probe_until')
    redis.call('PEXPIRE', key, ttl)
    return 'reopened'
  end
  return 'open'
end
local fails = tonumber(v[2]) or 0
if now >= (tonumber(v[3]) or 0) then
  fails = 0
  redis.call('HSET', key, 'window_until', now + window)
end
fails = fails + 1
if fails >= threshold then
  redis.call('DEL', key)
  redis.call('HSET', key, 'open_until', now + open_for)
  redis.call('PEXPIRE', key, ttl)
  return 'opened'
end
redis.call('HSET', key, 'fails', fails)
redis.call('PEXPIRE', key, ttl)
return 'counted'
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ModelBreakers:
    """The breakers of every model, over Redis (or this process's own store while it is away)."""

    def __init__(
        self,
        client: Client | None,
        prefix: str,
        settings: ChainSettings,
        clock: Clock | None = None,
        state: RedisState | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.prefix = prefix
        self._script = client.register_script(_BREAKER) if client is not None else None
        self._state = state or RedisState()
        self._local_script: Any = None

    def _key(self, model: str) -> str:
        # One hash tag for every model: a chain's states are read in one script on a Cluster too.
        return f"{self.prefix}:breaker:{{models}}:{model}"

    async def states(self, models: Sequence[str]) -> dict[str, str]:
        """Each model's state: closed, open, probing (another request probes it) or half_open."""
        if not models:
            return {}
        reply = await self._eval([self._key(m) for m in models], ["states", self.clock.now()])
        states = {model: _text(state) for model, state in zip(models, reply, strict=True)}
        for model, state in states.items():
            metrics.model_breaker_state(model, state)
        return states

    async def probe(self, model: str) -> bool:
        """Take the one probe of a half-open model; False when another request has it."""
        reply = await self._eval([self._key(model)], ["probe", self.clock.now(), KEY_TTL_MS, PROBE_LIMIT])
        return int(reply) == 1

    async def failed(self, model: str) -> None:
        s = self.settings
        args: list[str | float | int] = [
            "failed", self.clock.now(), KEY_TTL_MS, s.breaker_window, s.breaker_failures, s.breaker_open
        ]
        result = _text(await self._eval([self._key(model)], args))
        if result in ("opened", "reopened"):
            metrics.model_breaker_state(model, OPEN)
            log.warning(
                "model %s %s: skipped by every replica for %.0f s, then probed",
                model, "failed its probe" if result == "reopened" else f"failed {s.breaker_failures} times "
                f"within {s.breaker_window:.0f} s", s.breaker_open,
            )

    async def succeeded(self, model: str) -> None:
        """The model answered its probe: closed again."""
        await self._eval([self._key(model)], ["succeeded", self.clock.now(), KEY_TTL_MS])
        metrics.model_breaker_state(model, CLOSED)
        log.warning("model %s answered its probe: back in the chain", model)

    async def _eval(self, keys: list[str], args: list[str | float | int]) -> Any:
        if self._script is not None and self._state.worth_trying:
            try:
                reply = await self._script(keys, args)
            except Unreachable as exc:
                self._state.failed("model_breaker", exc)
            except asyncio.CancelledError:
                self._state.abandoned()
                raise
            else:
                self._state.succeeded()
                return reply
        return await self._local()(keys, args)

    def _local(self) -> Any:
        if self._local_script is None:
            import fakeredis  # the embedded store, already a dependency

            self._local_script = fakeredis.FakeAsyncRedis(decode_responses=True).register_script(_BREAKER)
        return self._local_script
