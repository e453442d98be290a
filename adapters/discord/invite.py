"""The link that adds the bot to a server, with exactly what it needs."""

from __future__ import annotations

import discord

SCOPES = ("bot", "applications.commands")

# What the bot does in a channel, and nothing more: read it, answer in it or
# in a thread (opening one with DISCORD_THREADS=true), and read the reply
# chain or thread to rebuild a conversation.
PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    read_message_history=True,
)


def invite_url(application_id: int | str) -> str:
    """`https://discord.com/oauth2/authorize?client_id=…&scope=bot+applications.commands&permissions=…`."""
    return discord.utils.oauth_url(int(application_id), permissions=PERMISSIONS, scopes=SCOPES)


def portal_url(application_id: int | str | None) -> str:
    """Where the bot's settings (and its privileged intents) live in the developer portal."""
    if application_id is None:
        return "https://discord.com/developers/applications"
    return f"https://discord.com/developers/applications/{application_id}/bot"
