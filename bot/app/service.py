"""`python -m bot run`: every enabled platform in one process, until SIGTERM.

Start: the engine, then the health server (`/healthz`, `/readyz`, `/metrics`:
mounted on the Slack HTTP app when Slack runs in HTTP mode, so one port serves
both, else on its own on `HEALTH_PORT`), then each adapter, then the upkeep
(heartbeat, answers in flight, token usage; see `bot.ops.upkeep`), whose sweeps mark
answers a crashed process left half-written.

Stop (SIGTERM or SIGINT):
1. `/readyz` answers 503 "draining", so load balancers stop sending events;
2. the engine stops claiming events (`claim` is False and marks nothing, so
   another replica or the restarted process can take them), and adapters stop
   their intake (`Adapter.stop_intake()`, a no-op where there is nothing to stop);
3. answers in flight get `SHUTDOWN_GRACE_SECONDS` to finish; the rest are
   cancelled, land their text so far marked "Interrupted: the bot is
   restarting", and release their conversation locks on the way out;
4. the upkeep writes the last usage and drops the heartbeat; adapters
   disconnect; Redis and the model client close; exit 0.

A second signal during step 3 cuts the grace short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

from bot.app.preflight import settings_problems
from bot.app.runtime import open_engine
from bot.app.startup import StartupFailed, explain, health_port_problem
from bot.config import ConfigError, Settings
from bot.contract import Adapter
from bot.engine import Engine
from bot.ops.health import Health, connected_check, connected_now, redis_check
from bot.ops.upkeep import Upkeep

log = logging.getLogger(__name__)

NO_PLATFORM = (
    "No platform is enabled: set SLACK_BOT_TOKEN, SLACK_CLIENT_ID and SLACK_CLIENT_SECRET, or "
    "DISCORD_BOT_TOKEN in .env (see .env.example); `run --no-platform` serves only /healthz, /readyz "
    "and /metrics, `chat` talks to the model in this terminal."
)


def build_adapters(settings: Settings, engine: Engine) -> list[Adapter]:
    adapters: list[Adapter] = []
    if settings.slack.enabled:
        from adapters.slack import SlackAdapter

        installs = None
        if settings.slack.multi_workspace:
            from bot.app.installs import slack_installs

            installs = slack_installs(settings, engine.redis)
        adapters.append(SlackAdapter(settings, engine, installs))
    if settings.discord.enabled:
        from adapters.discord import DiscordAdapter

        adapters.append(DiscordAdapter(settings, engine))
    return adapters


class Service:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        adapters: Sequence[Adapter],
        *,
        health_port: int | None = None,
        upkeep: Upkeep | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.adapters = list(adapters)
        self.health = Health()
        self.health_port = settings.health_port if health_port is None else health_port
        self.upkeep = upkeep or Upkeep(engine.redis, engine.inflight, engine.usage)
        self.hurry = asyncio.Event()  # a second signal: no more grace
        self._started: list[Adapter] = []
        self._own_health_server = False

    async def run(self, stop: asyncio.Event) -> int:
        """Serve until `stop` is set, then shut down cleanly."""
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.shutdown()
        return 0

    async def start(self) -> None:
        # Soft: without Redis the bot still answers (bot.state.resilience), so it stays ready.
        state = self.engine.store_state
        self.health.add_check("redis", redis_check(self.engine.redis, state.succeeded), soft=True)
        for adapter in self.adapters:
            self.health.add_check(adapter.name, connected_check(adapter))
        web_app = next((a.web_app for a in self.adapters if a.web_app is not None), None)
        if web_app is not None:
            self.health.mount(web_app)  # before the adapter starts serving it
            log.info("health server on port %d with Slack's events (/healthz, /readyz, /metrics)",
                     self.settings.slack.port)
        else:
            try:
                self.health_port = await self.health.start(self.health_port)
            except OSError as exc:
                raise StartupFailed(health_port_problem(self.health_port, exc)) from exc
            self._own_health_server = True
        for adapter in self.adapters:
            try:
                await adapter.start()
            except Exception as exc:
                with _logged(f"stopping {adapter.name} after it failed to start"):
                    await adapter.stop()  # it may hold a session or a port already
                raise StartupFailed(explain(adapter.name, exc, self.settings)) from exc
            self._started.append(adapter)
            for part, check in adapter.part_checks().items():
                self.health.add_check(f"{adapter.name} {part}", connected_now(check))
            if adapter.reaches_earlier_messages:
                self.engine.inflight.register(adapter.name, adapter.surface_for)
            else:
                log.info("%s cannot reach earlier messages: answers cut by a crash stay as they are",
                         adapter.name)
            log.info("%s started", adapter.name)
        await self.upkeep.start()

    async def shutdown(self) -> None:
        self.health.set_draining()
        self.engine.stop_accepting()
        for adapter in self._started:
            with _logged(f"stopping {adapter.name}'s intake"):
                await adapter.stop_intake()
        grace = self.settings.shutdown_grace_seconds
        if self.engine.live_answers:
            log.info("shutting down: waiting up to %gs for %d answers in flight", grace,
                     self.engine.live_answers)
        cut = await self._drain(grace)
        if cut:
            log.warning("%d answers were cut short by the shutdown and marked as interrupted", cut)
        with _logged("stopping the upkeep"):
            await self.upkeep.stop()
        for adapter in reversed(self._started):
            with _logged(f"stopping {adapter.name}"):
                await adapter.stop()
        self._started.clear()
        if self._own_health_server:
            await self.health.stop()
        log.info("stopped")

    async def _drain(self, grace: float) -> int:
        draining = asyncio.create_task(self.engine.drain(grace))
        hurry = asyncio.create_task(self.hurry.wait())
        await asyncio.wait({draining, hurry}, return_when=asyncio.FIRST_COMPLETED)
        hurry.cancel()
        if not draining.done():
            log.warning("second signal: cutting the grace short")
            cut = await self.engine.drain(0)
            return max(cut, await draining)
        return draining.result()


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    """Shutdown goes on whatever one step raises."""
    try:
        yield
    except Exception:
        log.exception("error while %s", what)


async def serve(settings: Settings, *, platforms: bool = True) -> int:
    """Run until a signal; a failure to start is one line on stderr and exit status 2 (a setting
    to fix) or 1 (something outside failed), as docs/operations.md lists. Without `platforms`
    (`run --no-platform`), only the engine and the health server: /healthz, /readyz and /metrics
    tried locally."""
    if platforms and not (settings.slack.enabled or settings.discord.enabled):
        print(NO_PLATFORM, file=sys.stderr)
        return 2
    problems = settings_problems(settings)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    stop = asyncio.Event()
    async with open_engine(settings) as engine:
        service = Service(settings, engine, build_adapters(settings, engine) if platforms else [])

        def on_signal() -> None:
            if stop.is_set():
                service.hurry.set()
            stop.set()

        with _on_signals(on_signal):
            try:
                return await service.run(stop)
            except StartupFailed as failure:
                log.debug("start failed", exc_info=failure.__cause__)
                print(failure.problem.line, file=sys.stderr)
                return failure.problem.code
            except ConfigError as error:
                print(f"Configuration error: {error}", file=sys.stderr)
                return 2
            except Exception:
                log.exception("the bot could not run")
                return 1


@contextlib.contextmanager
def _on_signals(handler: Callable[[], None]) -> Iterator[None]:
    """SIGTERM and SIGINT call `handler` meanwhile. Signals reach the main thread only: on
    another (the tests run the command line in-process, in a thread) none is installed, and
    such a `run` ends only by failing to start, which is what those tests run it for."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handler)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
