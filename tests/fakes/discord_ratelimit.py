"""Discord's rate limits as the fake answers them.

Discord counts requests in buckets: a window opens at the first request and
allows `limit` requests until it resets `per` seconds later. Message creates
and message edits each have a bucket per channel (about 5 per 5 s); every
request of the bot also counts against a global 50 per second. Over a limit
Discord answers 429 with a JSON body `{"message", "retry_after", "global"}`,
a `Via` header (discord.py treats a 429 without it as a Cloudflare ban) and
`X-RateLimit-*` headers; successful answers carry the headers too, which
discord.py uses to wait pre-emptively.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tests.support.clock import REAL_TIME, FastClock


@dataclass
class Limits:
    """Discord-like defaults; the fake lets a test switch them off or change them."""

    creates: int = 5
    edits: int = 5
    per_channel_seconds: float = 5.0
    global_per_second: int = 50


@dataclass
class Bucket:
    limit: int
    per: float
    opened: float = float("-inf")
    used: int = 0

    def take(self, now: float) -> bool:
        if now - self.opened >= self.per:
            self.opened, self.used = now, 0
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def reset_after(self, now: float) -> float:
        return max(0.0, self.opened + self.per - now)

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass
class Verdict:
    """What the fake answers: `allowed`, or a 429 body; headers in both cases."""

    allowed: bool
    headers: dict[str, str]
    body: dict[str, object] | None = None


@dataclass
class RateLimiter:
    limits: Limits = field(default_factory=Limits)
    enabled: bool = True
    buckets: dict[tuple[str, str], Bucket] = field(default_factory=dict)
    global_bucket: Bucket | None = None
    forced: dict[str, list[float]] = field(default_factory=dict)
    # The buckets' time. discord.py waits out what the headers say in real seconds, so they
    # say it in real seconds (`clock.real`).
    clock: FastClock = REAL_TIME

    def refuse_next(self, kind: str, times: int = 1, retry_after: float = 0.2) -> None:
        """Answer the next `times` requests of `kind` ("create", "edit") with 429, limits or not."""
        self.forced.setdefault(kind, []).extend([retry_after] * times)

    def check(self, kind: str | None, channel_id: str | None, *, counts_global: bool) -> Verdict:
        """Count one request of `kind` ("create", "edit" or None) in `channel_id`."""
        if kind is not None and self.forced.get(kind):
            retry_after = self.forced[kind].pop(0)
            now = self.clock.monotonic()
            forced = Bucket(1, retry_after, opened=now, used=1)
            return self._refused(forced, now, is_global=False, name=kind)
        if not self.enabled:
            return Verdict(True, {})
        now = self.clock.monotonic()
        if counts_global:
            if self.global_bucket is None:
                self.global_bucket = Bucket(self.limits.global_per_second, 1.0)
            if not self.global_bucket.take(now):
                return self._refused(self.global_bucket, now, is_global=True, name="global")
        if kind is None or channel_id is None:
            return Verdict(True, {})
        bucket = self._bucket(kind, channel_id)
        if not bucket.take(now):
            return self._refused(bucket, now, is_global=False, name=kind)
        return Verdict(True, self._headers(bucket, now, kind))

    def _bucket(self, kind: str, channel_id: str) -> Bucket:
        key = (kind, channel_id)
        if key not in self.buckets:
            limit = self.limits.creates if kind == "create" else self.limits.edits
            self.buckets[key] = Bucket(limit, self.limits.per_channel_seconds)
        return self.buckets[key]

    def _headers(self, bucket: Bucket, now: float, name: str) -> dict[str, str]:
        reset_after = self.clock.real(bucket.reset_after(now))
        return {
            "X-RateLimit-Limit": str(bucket.limit),
            "X-RateLimit-Remaining": str(bucket.remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": f"fake-{name}",
        }

    def _refused(self, bucket: Bucket, now: float, *, is_global: bool, name: str) -> Verdict:
        retry_after = round(max(self.clock.real(bucket.reset_after(now)), 0.001), 3)
        headers = {
            "Via": "1.1 google",
            "Retry-After": str(max(1, round(retry_after))),
            "X-RateLimit-Scope": "global" if is_global else "user",
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        else:
            headers.update(self._headers(bucket, now, name))
        body: dict[str, object] = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": is_global,
        }
        return Verdict(False, headers, body)
