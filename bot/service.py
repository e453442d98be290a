"""`python -m bot run`: every enabled platform in one process, until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Protocol

from bot.config import Settings
from bot.engine import Engine
from bot.runtime import open_engine

log = logging.getLogger(__name__)

NO_PLATFORM = """No platform is enabled. Set at least one of:
  SLACK_BOT_TOKEN  (with SLACK_APP_TOKEN for Socket Mode, or SLACK_SIGNING_SECRET for HTTP mode)
  DISCORD_BOT_TOKEN
in .env or the environment; see .env.example. To try the bot without a platform: python -m bot chat"""


class Adapter(Protocol):
    name: str

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def build_adapters(settings: Settings, engine: Engine) -> list[Adapter]:
    adapters: list[Adapter] = []
    if settings.slack.enabled:
        from adapters.slack import SlackAdapter

        adapters.append(SlackAdapter(settings, engine))
    if settings.discord.enabled:
        from adapters.discord import DiscordAdapter

        adapters.append(DiscordAdapter(settings, engine))
    return adapters


async def serve(settings: Settings) -> int:
    if not (settings.slack.enabled or settings.discord.enabled):
        print(NO_PLATFORM, file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_engine(settings) as engine:
        adapters = build_adapters(settings, engine)
        for adapter in adapters:
            await adapter.start()
            log.info("%s started", adapter.name)
        await stop.wait()
        log.info("shutting down: waiting up to %.0fs for %d answers in flight",
                 settings.shutdown_grace_seconds, engine.live_answers)
        cut = await engine.drain(settings.shutdown_grace_seconds)
        if cut:
            log.warning("%d answers were cut short by the shutdown and marked as interrupted", cut)
        for adapter in adapters:
            await adapter.stop()
    return 0
