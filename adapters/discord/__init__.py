"""Discord: DMs, mentions, reply chains and threads answered by the core; /persona and /forget.

`DiscordAdapter(settings, engine)` runs the bot; `check(settings)` is its part
of `python -m bot check`; `invite_url(application_id)` is the link that adds
it to a server.
"""

from adapters.discord.adapter import DiscordAdapter
from adapters.discord.check import check
from adapters.discord.invite import invite_url

__all__ = ["DiscordAdapter", "check", "invite_url"]
