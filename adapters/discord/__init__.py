"""Discord: DMs, mentions, reply chains and threads answered by the core; /persona and /forget.

`DiscordAdapter(settings, engine)` runs the bot; `invite_url(application_id)` is the link that
adds it to a server; `platform.py` is what the bot discovers through the entry point group
`chatbot.platforms` (pyproject.toml): when Discord runs, its checks (`check.py`), its start.

The names are loaded when first used, so discovering the platform (every command does) does
not import discord.py where Discord is not enabled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters import lazy_names

if TYPE_CHECKING:
    from adapters.discord.adapter import DiscordAdapter
    from adapters.discord.invite import invite_url

__all__ = ["DiscordAdapter", "invite_url"]

__getattr__ = lazy_names(__name__, {
    "DiscordAdapter": "adapters.discord.adapter",
    "invite_url": "adapters.discord.invite",
})
