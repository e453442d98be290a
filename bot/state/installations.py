"""A platform's installations, encrypted at rest, and the one-time states of its install links:
the Redis side of `bot.contract.installs` (which `adapters/slack/installations.py` maps
slack_sdk's types onto). Values are opaque strings here, sealed with `bot.state.sealed`.
Keys: `bot.state.keys` (docs/architecture.md, "State and the Redis layout").
"""

from __future__ import annotations

from bot.contract.installs import Installs, Unreadable
from bot.state.interface import Client
from bot.state.keys import Keys
from bot.state.sealed import InvalidToken, Sealer


def open_installs(client: Client, prefix: str, platform: str, keys: str, state_ttl: int) -> Installs:
    """`platform`'s installations under `prefix`, encrypted with `keys` (raises ValueError when a
    key is malformed), and its OAuth states, each good for `state_ttl` seconds."""
    names = Keys(prefix)
    records = SealedRecords(client, names, platform, Sealer(keys))
    return Installs(records, OneTimeStates(client, names, platform, state_ttl))


class SealedRecords:
    """Named records of one platform, each one encrypted string; an index set counts them."""

    def __init__(self, client: Client, keys: Keys, platform: str, sealer: Sealer) -> None:
        self.client = client
        self.keys = keys
        self.platform = platform
        self.sealer = sealer

    async def put(self, name: str, plain: str) -> None:
        sealed = self.sealer.seal(plain)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.installation(self.platform, name), sealed)
            pipe.sadd(self.keys.installations(self.platform), name)
            await pipe.execute()

    async def get(self, name: str) -> str | None:
        sealed = await self.client.get(self.keys.installation(self.platform, name))
        if sealed is None:
            return None
        try:
            return self.sealer.open(str(sealed))
        except InvalidToken:
            raise Unreadable(name) from None

    async def delete(self, *names: str) -> int:
        if not names:
            return 0
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:  # one per key: on a Redis Cluster they live on several slots
                pipe.delete(self.keys.installation(self.platform, name))
            pipe.srem(self.keys.installations(self.platform), *names)
            *deleted, _ = await pipe.execute()
        return sum(int(d) for d in deleted)


async def count(client: Client, keys: Keys, platform: str) -> int:
    """How many installations are stored (no key needed to count them)."""
    return int(await client.scard(keys.installations(platform)))


async def names(client: Client, keys: Keys, platform: str) -> set[str]:
    return {str(name) for name in await client.smembers(keys.installations(platform))}


class OneTimeStates:
    """Values good for one use within `ttl` seconds (an OAuth state: a second use is refused)."""

    def __init__(self, client: Client, keys: Keys, platform: str, ttl: int) -> None:
        self.client = client
        self.keys = keys
        self.platform = platform
        self.ttl = ttl

    async def issue(self, state: str) -> None:
        await self.client.set(self.keys.oauth_state(self.platform, state), "1", ex=self.ttl, nx=True)

    async def consume(self, state: str) -> bool:
        """True once for a state issued less than `ttl` ago; GETDEL, so two tabs cannot both use it."""
        return await self.client.getdel(self.keys.oauth_state(self.platform, state)) is not None
