"""The process's one small HTTP server: `/healthz`, `/readyz`, `/metrics`.

- `/healthz` answers 200 while the process and its event loop run: the handler runs
  on the loop, so a blocked or dead loop shows as a probe timeout. It checks nothing
  outside the process, so an outage of Redis or a platform never restarts the pod.
- `/readyz` runs every readiness check at once (Redis answers, each enabled platform
  is connected), each with a timeout, and answers 200, or 503 naming what failed.
  A *soft* check (Redis: the bot answers without it, see `bot.state.resilience`) that fails
  reads "degraded" and keeps the process ready, so Kubernetes keeps routing to it.
  While the process shuts down it answers 503 "draining", so load balancers stop
  sending it events before it stops taking them.
- `/metrics` serves `bot.ops.metrics` in the Prometheus text format.

`Health.mount(app)` adds the routes to an existing aiohttp app (the Slack HTTP mode
server, so one port serves both); `Health.start(port)` runs them on their own
(`HEALTH_PORT`). `serving_port(settings)` is the rule for which port that is, shared
by the runtime, the container health check (`python -m bot.ops.health`) and the deploy
files.

    health = Health()
    health.add_check("redis", redis_check(redis_client))
    health.add_check("slack", connected_check(slack_adapter))
    await health.start(serving_port(settings))   # or health.mount(slack_web_app)
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from bot.ops import metrics
from bot.ops.logs import redact

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)

HEALTHZ = "/healthz"
READYZ = "/readyz"
METRICS = "/metrics"

DEGRADED = "degraded"

ReadinessCheck = Callable[[], Awaitable[bool]]


class HasConnected(Protocol):
    """What readiness needs from a platform adapter."""

    @property
    def connected(self) -> bool: ...


def redis_check(client: Any, on_answer: Callable[[], None] | None = None) -> ReadinessCheck:
    """Ready while `client` (a redis.asyncio client) answers PING; `on_answer` is called
    when it does (the engine learns that Redis is back without waiting for a message)."""

    async def check() -> bool:
        answered = bool(await client.ping())
        if answered and on_answer is not None:
            on_answer()
        return answered

    return check


def connected_check(adapter: HasConnected) -> ReadinessCheck:
    """Ready while the adapter says it is connected to its platform."""

    async def check() -> bool:
        return adapter.connected

    return check


def connected_now(connected: Callable[[], bool]) -> ReadinessCheck:
    """Ready while `connected()` says so (one part of a platform: a Discord shard)."""

    async def check() -> bool:
        return connected()

    return check


def serving_port(settings: Settings) -> int:
    """The port `/healthz` is on: the Slack HTTP server's when Slack runs in HTTP mode
    (one server, one port), else `HEALTH_PORT`."""
    if settings.slack.enabled and settings.slack.mode == "http":
        return settings.slack.port
    return settings.health_port


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: Mapping[str, str]  # name -> "ok" or why it failed
    draining: bool = False

    @property
    def failed(self) -> list[str]:
        return [name for name, result in self.checks.items() if result not in ("ok", DEGRADED)]

    @property
    def degraded(self) -> list[str]:
        return [name for name, result in self.checks.items() if result == DEGRADED]


@dataclass
class Health:
    check_timeout: float = 2.0
    checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    soft: set[str] = field(default_factory=set)
    draining: bool = False
    started_at: float = field(default_factory=time.monotonic)
    _runner: web.AppRunner | None = None
    _last_failed: tuple[str, ...] = ()

    def add_check(self, name: str, check: ReadinessCheck, *, soft: bool = False) -> None:
        """`soft`: the process serves without it; a failure reads "degraded", still ready."""
        self.checks[name] = check
        if soft:
            self.soft.add(name)

    def set_draining(self) -> None:
        """From now on `/readyz` answers 503: the process is shutting down."""
        self.draining = True

    async def readiness(self) -> Readiness:
        names = list(self.checks)
        results = await asyncio.gather(*(self._run(self.checks[n]) for n in names))
        outcome = {
            name: DEGRADED if result != "ok" and name in self.soft else result
            for name, result in zip(names, results, strict=True)
        }
        report = Readiness(
            ready=not self.draining and all(r in ("ok", DEGRADED) for r in outcome.values()),
            checks=outcome,
            draining=self.draining,
        )
        self._log_change(report)
        return report

    async def _run(self, check: ReadinessCheck) -> str:
        try:
            ok = await asyncio.wait_for(check(), self.check_timeout)
        except TimeoutError:
            return f"no answer within {self.check_timeout:g}s"
        except Exception as exc:
            # The reason is served over HTTP: name the error, never a secret in it.
            return redact(f"{type(exc).__name__}: {exc}")[:200]
        return "ok" if ok else "not connected"

    def _log_change(self, report: Readiness) -> None:
        failed = tuple(report.failed + report.degraded)
        if failed != self._last_failed:
            if report.failed:
                details = ", ".join(f"{n} ({report.checks[n]})" for n in report.failed)
                log.warning("not ready: %s", details)
            elif failed:
                log.warning("ready, degraded: %s", ", ".join(report.degraded))
            else:
                log.info("ready again")
            self._last_failed = failed

    # ---- HTTP -------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        uptime = round(time.monotonic() - self.started_at, 1)
        return web.json_response({"status": "ok", "uptime_s": uptime})

    async def _readyz(self, request: web.Request) -> web.Response:
        report = await self.readiness()
        body: dict[str, Any] = {"ready": report.ready, "checks": dict(report.checks)}
        if report.draining:
            body["draining"] = True
        if not report.ready:
            body["failed"] = [*report.failed, *(["draining"] if report.draining else [])]
        return web.json_response(body, status=200 if report.ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = metrics.exposition(request.headers.get("Accept"))
        response = web.Response(body=body)
        # Set the header whole: aiohttp's content_type= would drop the version parameter.
        response.headers["Content-Type"] = content_type
        return response

    def mount(self, app: web.Application) -> None:
        """Add the three routes to `app` (before it starts)."""
        app.router.add_get(HEALTHZ, self._healthz)
        app.router.add_get(READYZ, self._readyz)
        app.router.add_get(METRICS, self._metrics)

    async def start(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve the routes on their own; returns the port (useful with port 0)."""
        app = web.Application()
        self.mount(app)
        runner = web.AppRunner(app, access_log=None)  # probes every few seconds: no access log
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        bound = runner.addresses[0][1]
        log.info("health server on port %s (%s, %s, %s)", bound, HEALTHZ, READYZ, METRICS)
        return int(bound)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def probe(port: int, path: str = HEALTHZ, timeout: float = 3.0) -> bool:
    """True if `http://127.0.0.1:{port}{path}` answers 200 (the container health check)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            return int(reply.status) == 200
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    """`python -m bot.ops.health [path]`: exit 0 if the running bot answers on its port."""
    from bot.config import ConfigError, load_settings

    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else HEALTHZ
    try:
        port = serving_port(load_settings())
    except ConfigError as exc:
        print(f"health check: configuration error: {exc}", file=sys.stderr)
        return 1
    if probe(port, path):
        return 0
    print(f"health check: no 200 from http://127.0.0.1:{port}{path}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
