"""Reading Discord messages: who wrote them, whom they address, their text for the model."""

from __future__ import annotations

import re

import discord

# Messages people write; everything else (joins, pins, thread notices, boosts…) is a system message.
PEOPLE_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})

_MENTION = re.compile(r"<(@[!&]?|#)(\d+)>")


def is_system(message: discord.Message) -> bool:
    return message.type not in PEOPLE_TYPES or message.is_system()


def is_from_bot(message: discord.Message) -> bool:
    """Another bot or a webhook (the bot itself is checked separately)."""
    return message.author.bot or message.webhook_id is not None


def mentions_me(message: discord.Message, me: discord.abc.Snowflake) -> bool:
    """A direct mention of the bot (or a reply that pings it); role and @everyone pings do not count."""
    return any(user.id == me.id for user in message.mentions)


def mentions_others(message: discord.Message, me: discord.abc.Snowflake) -> bool:
    """It mentions someone other than the bot, a role, or @everyone/@here."""
    return (
        message.mention_everyone
        or bool(message.raw_role_mentions)
        or any(user.id != me.id for user in message.mentions)
    )


def replied_message(message: discord.Message) -> discord.Message | None:
    """The message this one replies to, when Discord sent it along."""
    reference = message.reference
    if reference is None or not isinstance(reference.resolved, discord.Message):
        return None
    return reference.resolved


def replied_id(message: discord.Message) -> int | None:
    reference = message.reference
    if reference is None or reference.message_id is None:
        return None
    if reference.channel_id != message.channel.id:
        return None  # a forward or a cross-channel reference, not a reply in this conversation
    return reference.message_id


def prompt_text(message: discord.Message, me: discord.abc.Snowflake) -> str:
    """The message as the model should read it: the bot's own mention removed, others as names."""
    names: dict[str, str] = {str(u.id): f"@{u.display_name}" for u in message.mentions}
    guild = message.guild

    def readable(match: re.Match[str]) -> str:
        kind, ident = match.group(1), match.group(2)
        if kind in ("@", "@!"):
            return "" if ident == str(me.id) else names.get(ident, "@someone")
        if kind == "@&":
            role = guild.get_role(int(ident)) if guild else None
            return f"@{role.name}" if role else "@role"
        channel = guild.get_channel_or_thread(int(ident)) if guild else None
        return f"#{channel.name}" if channel else "#channel"

    text = _MENTION.sub(readable, message.content)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def author_name(message: discord.Message) -> str:
    return message.author.display_name
