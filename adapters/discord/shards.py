"""Which gateway shards this process holds (docs/discord.md#sharding).

Discord sends a server's events to shard `(guild_id >> 22) % shard_count` and DMs to
shard 0. `DISCORD_SHARD_COUNT` and `DISCORD_SHARD_IDS` choose; with neither set the
process holds every shard of the count Discord recommends (`GET /gateway/bot`). Each
shard held is a lease in Redis (`bot.ops.leases`), so a second process naming the same
shard refuses to start instead of answering its events twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import discord

from bot.config import ConfigError, DiscordSettings
from bot.contract.budgets import LeaseTaken


@dataclass(frozen=True)
class ShardPlan:
    count: int
    ids: tuple[int, ...]

    @property
    def leases(self) -> list[str]:
        return [lease_name(shard) for shard in self.ids]


def lease_name(shard: int) -> str:
    return f"discord:shard:{shard}"


async def plan_shards(settings: DiscordSettings, http: discord.http.HTTPClient) -> ShardPlan:
    """The settings' shards, or every shard of the recommended count (needs a logged-in `http`)."""
    count = settings.shard_count
    if count is None:
        count, _url, _limits = await http.get_bot_gateway()
    ids = settings.shard_ids if settings.shard_ids is not None else tuple(range(count))
    return ShardPlan(count, ids)


def shard_taken(taken: LeaseTaken) -> ConfigError:
    shard = taken.name.rsplit(":", 1)[-1]
    return ConfigError(
        f"Discord shard {shard} is already held by another process ({taken.holder}): give each "
        "process its own DISCORD_SHARD_IDS. If that process is gone, its hold expires within "
        f"{taken.ttl:g}s."
    )
