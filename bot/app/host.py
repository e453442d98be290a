"""What the app layer lends every platform besides the `Core` (`bot.contract.platform.Host`):
the bot's own Redis, for the installations of a platform installed by many workspaces
(`bot.state.installations`), so a platform package never reaches into the store itself."""

from __future__ import annotations

from bot.config import Settings
from bot.contract import Installs
from bot.state import store
from bot.state.installations import names, open_installs
from bot.state.interface import Client
from bot.state.keys import Keys
from bot.state.sealed import key_problem


class StoreHost:
    """Over `client` (the engine's, for `run`), or a connection of its own opened on first use
    and closed by `aclose` (for `check`, which runs no engine)."""

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self.settings = settings
        self._client = client
        self._owned: Client | None = None

    async def _store(self) -> Client:
        if self._client is None:
            self._client = self._owned = await store.connect(self.settings)
        return self._client

    async def installs(self, platform: str, keys: str, state_ttl: int) -> Installs:
        return open_installs(await self._store(), self.settings.redis_prefix, platform, keys, state_ttl)

    async def installation_names(self, platform: str) -> set[str]:
        return await names(await self._store(), Keys(self.settings.redis_prefix), platform)

    def sealing_problem(self, keys: str | None, variable: str) -> str | None:
        return key_problem(keys, variable)

    async def aclose(self) -> None:
        owned, self._owned = self._owned, None
        if owned is not None:
            self._client = None
            await owned.aclose()
