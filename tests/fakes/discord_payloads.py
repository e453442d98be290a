"""Discord API v10 objects as the fake Discord serves them.

Plain dicts shaped like Discord's JSON, with only what discord.py 2.x reads.
Ids are real snowflakes (milliseconds since the Discord epoch, shifted), so
ordering by id is ordering by time, as on Discord.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DISCORD_EPOCH_MS = 1_420_070_400_000

# Channel types (https://discord.com/developers/docs/resources/channel#channel-object-channel-types)
GUILD_TEXT = 0
DM = 1
PUBLIC_THREAD = 11

# Message types
DEFAULT = 0
REPLY = 19
THREAD_CREATED = 18
CHANNEL_PINNED_MESSAGE = 6

# Permission bits used by the fake's members and interactions.
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
READ_MESSAGE_HISTORY = 1 << 16
MANAGE_CHANNELS = 1 << 4
ADMINISTRATOR = 1 << 3
MEMBER_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES | READ_MESSAGE_HISTORY

JSON = dict[str, Any]

_counter = itertools.count()


def snowflake() -> str:
    """A new, strictly increasing snowflake id."""
    millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return str((millis << 22) | (next(_counter) & 0x3FFFFF))


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class User:
    id: str
    name: str
    bot: bool = False
    global_name: str | None = None

    @property
    def display_name(self) -> str:
        return self.global_name or self.name

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> JSON:
        return {
            "id": self.id,
            "username": self.name,
            "global_name": self.global_name,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }


@dataclass
class Channel:
    """A text channel, a thread or a DM, with the messages users see in it (in order)."""

    id: str
    type: int
    name: str = ""
    guild_id: str | None = None
    parent_id: str | None = None
    owner_id: str | None = None
    recipient: User | None = None
    messages: dict[str, JSON] = field(default_factory=dict)

    @property
    def is_thread(self) -> bool:
        return self.type == PUBLIC_THREAD

    def payload(self) -> JSON:
        if self.type == DM:
            assert self.recipient is not None
            return {
                "id": self.id,
                "type": DM,
                "last_message_id": None,
                "recipients": [self.recipient.payload()],
            }
        data: JSON = {
            "id": self.id,
            "type": self.type,
            "guild_id": self.guild_id,
            "name": self.name,
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": self.parent_id,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }
        if self.is_thread:
            data.update(
                owner_id=self.owner_id,
                message_count=len(self.messages),
                member_count=1,
                thread_metadata={
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": iso_now(),
                    "locked": False,
                },
            )
        return data


@dataclass
class Guild:
    id: str
    name: str
    owner: User
    channels: dict[str, Channel] = field(default_factory=dict)
    members: dict[str, User] = field(default_factory=dict)
    # Extra permission bits per member id, on top of MEMBER_PERMISSIONS.
    grants: dict[str, int] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)  # role id -> name

    def permissions_of(self, user: User) -> int:
        if user.id == self.owner.id:
            return MEMBER_PERMISSIONS | ADMINISTRATOR | MANAGE_CHANNELS
        return MEMBER_PERMISSIONS | self.grants.get(user.id, 0)

    def member_payload(self, user: User, *, with_permissions: bool = False) -> JSON:
        data: JSON = {
            "user": user.payload(),
            "nick": None,
            "roles": [],
            "joined_at": iso_now(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
        }
        if with_permissions:
            data["permissions"] = str(self.permissions_of(user))
        return data

    def create_payload(self) -> JSON:
        """The GUILD_CREATE dispatch body."""
        everyone = {
            "id": self.id,
            "name": "@everyone",
            "permissions": str(MEMBER_PERMISSIONS),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        roles = [everyone] + [
            {**everyone, "id": role_id, "name": name, "position": 1, "permissions": "0"}
            for role_id, name in self.roles.items()
        ]
        plain = [c for c in self.channels.values() if not c.is_thread]
        threads = [c for c in self.channels.values() if c.is_thread]
        return {
            "id": self.id,
            "name": self.name,
            "unavailable": False,
            "owner_id": self.owner.id,
            "member_count": len(self.members),
            "members": [self.member_payload(u) for u in self.members.values()],
            "channels": [c.payload() for c in plain],
            "threads": [c.payload() for c in threads],
            "roles": roles,
            "emojis": [],
            "stickers": [],
            "features": [],
            "voice_states": [],
            "presences": [],
            "large": False,
            "joined_at": iso_now(),
            "preferred_locale": "en-US",
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "system_channel_flags": 0,
        }


def message_payload(
    *,
    channel: Channel,
    author: User,
    content: str,
    mentions: list[User] = (),  # type: ignore[assignment]
    mention_roles: list[str] = (),  # type: ignore[assignment]
    mention_everyone: bool = False,
    reference: JSON | None = None,
    message_type: int | None = None,
    member: JSON | None = None,
) -> JSON:
    """A message object as Discord returns it from REST and in MESSAGE_CREATE."""
    referenced = None
    if reference is not None:
        referenced = {k: v for k, v in reference.items() if k != "referenced_message"}
    data: JSON = {
        "id": snowflake(),
        "channel_id": channel.id,
        "type": message_type if message_type is not None else (REPLY if reference else DEFAULT),
        "content": content,
        "author": author.payload(),
        "timestamp": iso_now(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": mention_everyone,
        "mentions": [u.payload() for u in mentions],
        "mention_roles": list(mention_roles),
        "attachments": [],
        "embeds": [],
        "components": [],
        "pinned": False,
        "flags": 0,
    }
    if channel.guild_id is not None:
        data["guild_id"] = channel.guild_id
        if member is not None:
            data["member"] = member
    if reference is not None:
        data["message_reference"] = {
            "type": 0,
            "message_id": reference["id"],
            "channel_id": reference["channel_id"],
            **({"guild_id": channel.guild_id} if channel.guild_id else {}),
        }
        data["referenced_message"] = referenced
    return data


GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19  # the intent switched on, app not yet verified


def application_payload(app_id: str, bot: User, owner: User, *, message_content: bool) -> JSON:
    """`GET /oauth2/applications/@me` (discord.py reads these at login)."""
    return {
        "id": app_id,
        "name": bot.name,
        "description": "",
        "icon": None,
        "bot_public": True,
        "bot_require_code_grant": False,
        "owner": owner.payload(),
        "verify_key": "0" * 64,
        "flags": GATEWAY_MESSAGE_CONTENT_LIMITED if message_content else 0,
        "team": None,
        "summary": "",
        "interactions_endpoint_url": None,
    }


def command_option(name: str, value: Any, *, focused: bool = False) -> JSON:
    """One filled-in option of a slash command; the type follows the Python value."""
    kind = (
        5
        if isinstance(value, bool)
        else 4
        if isinstance(value, int)
        else 10
        if isinstance(value, float)
        else 3
    )
    option: JSON = {"name": name, "type": kind, "value": value}
    if focused:
        option["focused"] = True
    return option
