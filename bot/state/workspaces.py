"""Forget one workspace: `python -m bot forget-workspace T…` (docs/operations.md).

Deletes every key of that workspace (conversations, personas, pacing windows, claims,
installations) and its channels' usage counts. Per-person usage is counted by user id,
not by workspace, and stays until its 35 days pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.state.installations import names as installation_names
from bot.state.interface import Client
from bot.state.keys import Keys

BATCH = 500  # keys per SCAN page and per UNLINK


@dataclass(frozen=True)
class Forgotten:
    keys: int  # keys deleted (installations included)
    installations: int
    usage_fields: int  # per-channel usage counts deleted


def _installation_of(name: str, workspace: str) -> bool:
    """An installation name is "enterprise:team" ("-" for a part that is absent)."""
    enterprise, _, team = name.partition(":")
    return workspace in (enterprise, team)


async def forget_workspace(client: Client, keys: Keys, platform: str, workspace: str) -> Forgotten:
    deleted = 0
    for pattern in keys.workspace_patterns(platform, workspace):
        batch: list[str] = []
        async for key in client.scan_iter(match=pattern, count=BATCH):
            batch.append(str(key))
            if len(batch) >= BATCH:
                deleted += int(await client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(await client.unlink(*batch))
    installs = [n for n in await installation_names(client, keys, platform) if _installation_of(n, workspace)]
    if installs:
        async with client.pipeline(transaction=False) as pipe:
            # One DEL per key: on a Cluster they live on several slots. (Not UNLINK: redis-py's
            # asyncio cluster pipeline runs `unlink` at once as a coroutine instead of queueing it.)
            for name in installs:
                pipe.delete(keys.installation(platform, name))
            pipe.srem(keys.installations(platform), *installs)
            *gone, _ = await pipe.execute()
        deleted += sum(int(g) for g in gone)
    fields = 0
    prefix = f"{platform}:{workspace}:"
    async for usage_key in client.scan_iter(match=keys.channel_usage_pattern, count=BATCH):
        mine = [str(f) async for f, _ in client.hscan_iter(str(usage_key), match=prefix + "*")]
        if mine:
            fields += int(await client.hdel(str(usage_key), *mine))
    return Forgotten(deleted, len(installs), fields)
