"""The console as a plug-in (`bot.contract.Platform`), registered in `pyproject.toml`'s
`chatbot.platforms` like Slack and Discord. `run` never enables it: a terminal chat needs a
person at the terminal, and `python -m bot chat` starts it with the chat's own options."""

from __future__ import annotations

from typing import Any

from bot.contract import Adapter, Core
from bot.contract.platform import Host, Platform


class ConsolePlatform(Platform[None]):
    name = "console"

    def configure(self, settings: Any) -> None:
        return None

    async def build(self, config: None, settings: Any, core: Core, host: Host) -> Adapter:
        from adapters.console.adapter import ConsoleAdapter, conversation_for

        return ConsoleAdapter(core, conversation_for("console", None))


platform = ConsolePlatform()
