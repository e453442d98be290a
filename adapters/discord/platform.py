"""Discord as a plug-in (`bot.contract.Platform`), registered in `pyproject.toml`'s
`chatbot.platforms`: when it runs, what `check` tries, and what a failed start means.

Its settings are still read with the core's (`bot.config.DiscordSettings`, `settings.discord`);
discord.py is imported only once Discord is enabled.
"""

from __future__ import annotations

from typing import Any

from bot.config import DiscordSettings, Settings
from bot.contract import Adapter, Core
from bot.contract.platform import Check, Host, Platform, Problem


class DiscordPlatform(Platform[DiscordSettings]):
    name = "discord"
    enable_hint = "DISCORD_BOT_TOKEN"

    def configure(self, settings: Settings) -> DiscordSettings | None:
        return settings.discord if settings.discord.enabled else None

    async def build(self, config: DiscordSettings, settings: Settings, core: Core, host: Host) -> Adapter:
        from adapters.discord.adapter import DiscordAdapter

        return DiscordAdapter(settings, core)

    def checks(self, config: DiscordSettings, settings: Settings, host: Host) -> list[tuple[str, Check]]:
        from adapters.discord.check import check

        return [(self.name, lambda: check(settings))]

    def startup_problem(self, exc: BaseException, config: DiscordSettings | None, settings: Any) -> Problem:
        from adapters.discord.check import startup_problem

        return startup_problem(exc, settings)


platform = DiscordPlatform()
