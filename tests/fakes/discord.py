"""A fake Discord: REST API v10 and the gateway websocket, on 127.0.0.1.

Point the real discord.py at it (see FAKES.md):

    async with FakeDiscord() as fake:
        discord.http.Route.BASE = fake.api_url
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
        guild = fake.add_guild("Test")
        general = fake.add_text_channel(guild, "general")
        alice = fake.add_user("alice", guild=guild)
        ...  # start a discord.Client with token fake.token
        await fake.user_message(general, alice, f"{fake.bot.mention} hello")

It keeps what users see (messages per channel, edits applied), records every
REST call (method, route template, JSON body, time, status), answers with
Discord-like rate limits (switchable), and dispatches MESSAGE_CREATE /
INTERACTION_CREATE on demand. The bot's own posts and edits come back over
the gateway as on Discord, so a client must ignore them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import WSMsgType, web

from tests.fakes.discord_interactions import (
    AUTOCOMPLETE_RESULT,
    CHANNEL_MESSAGE,
    DEFERRED_CHANNEL_MESSAGE,
    EPHEMERAL,
    MODAL,
    RESPONSE_WINDOW,
    Interaction,
)
from tests.fakes.discord_payloads import (
    DM,
    GUILD_TEXT,
    JSON,
    PUBLIC_THREAD,
    THREAD_CREATED,
    Channel,
    Guild,
    User,
    application_payload,
    command_option,
    iso_now,
    message_payload,
    snowflake,
)
from tests.fakes.discord_ratelimit import Limits, RateLimiter
from tests.fakes.timeline import Timeline
from tests.support.clock import REAL_TIME, FastClock

MESSAGE_CONTENT_INTENT = 1 << 15
HEARTBEAT_INTERVAL_MS = 41_250
CLOSE_DISALLOWED_INTENTS = 4014
CLOSE_INVALID_SHARD = 4010
CLOSE_SHARDING_REQUIRED = 4011
GUILDS_PER_SHARD = 2500  # past this many servers per shard Discord refuses the IDENTIFY


def shard_of(guild_id: str | int | None, shard_count: int) -> int:
    """The shard Discord sends a server's events to; DMs (no server) go to shard 0."""
    return 0 if guild_id is None else (int(guild_id) >> 22) % shard_count


def snowflake_on_shard(shard: int, shard_count: int) -> str:
    """A fresh snowflake whose server would live on `shard` of `shard_count`."""
    while True:
        candidate = snowflake()
        millis = int(candidate) >> 22
        millis -= (millis - shard) % shard_count
        if millis >= 0:
            return str((millis << 22) | (int(candidate) & 0x3FFFFF))


@dataclass
class Call:
    """One REST request the fake received."""

    method: str
    route: str  # template, e.g. "/channels/{channel_id}/messages"
    path: str
    json: Any
    at: float  # clock.monotonic() when it arrived (tests/support/clock.py)
    status: int = 0
    params: dict[str, str] = field(default_factory=dict)
    channel_id: str | None = None
    message_id: str | None = None  # the message edited, fetched or created

    @property
    def content(self) -> str | None:
        return self.json.get("content") if isinstance(self.json, dict) else None


def pings_anyone(body: JSON, *, is_reply: bool) -> bool:
    """Whether Discord could notify someone for a message sent or edited with `body`.

    Without `allowed_mentions` Discord parses every mention in the content;
    a reply pings its author unless `replied_user` is false.
    """
    allowed = body.get("allowed_mentions")
    if allowed is None:
        content = str(body.get("content") or "")
        mentions = re.search(r"<@[!&]?\d+>|@everyone|@here", content) is not None
        return mentions or is_reply
    return bool(
        allowed.get("parse")
        or allowed.get("users")
        or allowed.get("roles")
        or (is_reply and allowed.get("replied_user", False))
    )


_CALL = web.RequestKey("call", Call)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _Session:
    ws: web.WebSocketResponse
    seq: int = 0
    intents: int = 0
    identified: bool = False
    shard: tuple[int, int] = (0, 1)  # [shard_id, shard_count] from IDENTIFY

    def receives(self, guild_id: str | int | None) -> bool:
        return shard_of(guild_id, self.shard[1]) == self.shard[0]


_ROUTES: list[tuple[str, str]] = [
    ("GET", "/users/@me"),
    ("GET", "/oauth2/applications/@me"),
    ("GET", "/gateway"),
    ("GET", "/gateway/bot"),
    ("POST", "/users/@me/channels"),
    ("GET", "/channels/{channel_id}"),
    ("POST", "/channels/{channel_id}/typing"),
    ("GET", "/channels/{channel_id}/messages"),
    ("POST", "/channels/{channel_id}/messages"),
    ("GET", "/channels/{channel_id}/messages/{message_id}"),
    ("PATCH", "/channels/{channel_id}/messages/{message_id}"),
    ("DELETE", "/channels/{channel_id}/messages/{message_id}"),
    ("POST", "/channels/{channel_id}/messages/{message_id}/threads"),
    ("GET", "/applications/{app_id}/commands"),
    ("PUT", "/applications/{app_id}/commands"),
    ("GET", "/applications/{app_id}/guilds/{guild_id}/commands"),
    ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands"),
    ("POST", "/interactions/{interaction_id}/{token}/callback"),
    ("POST", "/webhooks/{app_id}/{token}"),
    ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}"),
    ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}"),
    ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}"),
]


class DiscordError(Exception):
    """A Discord JSON error (`{"message", "code"}`) with a status."""

    def __init__(self, status: int, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, "code": code}


class FakeDiscord:
    """Discord's REST API and gateway for one bot, in this process."""

    def __init__(
        self,
        *,
        token: str = "discord-test-token",
        rate_limits: bool = True,
        limits: Limits | None = None,
        message_content_allowed: bool = True,
        echo_own_messages: bool = True,
        recommended_shards: int = 1,
        guilds_per_shard: int = GUILDS_PER_SHARD,
        clock: FastClock = REAL_TIME,
    ) -> None:
        self.token = token
        self.recommended_shards = recommended_shards  # what GET /gateway/bot answers
        self.guilds_per_shard = guilds_per_shard
        # Its rate buckets and records run on `clock` (tests/support/clock.py).
        self.limiter = RateLimiter(limits or Limits(), enabled=rate_limits, clock=clock)
        self.message_content_allowed = message_content_allowed
        self.echo_own_messages = echo_own_messages
        self.application_id = snowflake()
        self.owner = User(snowflake(), "owner")
        self.bot = User(snowflake(), "chatbot", bot=True)
        self.users: dict[str, User] = {self.bot.id: self.bot, self.owner.id: self.owner}
        self.guilds: dict[str, Guild] = {}
        self.channels: dict[str, Channel] = {}
        self.calls: list[Call] = []
        self.commands: dict[str | None, list[JSON]] = {}  # guild id (None: global) -> commands
        self.interactions: dict[str, Interaction] = {}
        self.identifies: list[JSON] = []
        # Every dispatch sent: (shard id of the session, event name, the payload's id).
        self.delivered: list[tuple[int, str, str | None]] = []
        # Every message the bot ever created in a channel (deleted ones too), by id: what
        # it showed and when, for tests that measure what people saw meanwhile.
        self.timelines: dict[str, Timeline] = {}
        self._sessions: list[_Session] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._changed = asyncio.Event()
        self._background: set[asyncio.Future[None]] = set()
        # Attachment bytes by attachment id, served at their CDN URL. `downloads_fail`: the
        # status every download answers instead (404: deleted, 403: refused).
        self.files: dict[str, bytes] = {}
        self.downloads_fail: int | None = None
        self.downloads: list[str] = []  # attachment ids, in order of download

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def clock(self) -> FastClock:
        """The time of its rate buckets and records (tests/support/clock.py)."""
        return self.limiter.clock

    @clock.setter
    def clock(self, clock: FastClock) -> None:
        self.limiter.clock = clock

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/", self._gateway)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._attachment)
        for method, route in _ROUTES:
            app.router.add_route(method, "/api/v10" + route, self._handler_for(method, route))
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server) and server.sockets
        self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for session in list(self._sessions):
            with contextlib.suppress(Exception):
                await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    # --- world building ----------------------------------------------------------------------

    def add_user(self, name: str, *, guild: Guild | None = None, bot: bool = False) -> User:
        user = User(snowflake(), name, bot=bot, global_name=name.title())
        self.users[user.id] = user
        if guild is not None:
            guild.members[user.id] = user
        return user

    def add_guild(self, name: str = "Test Server", *, shard: tuple[int, int] | None = None) -> Guild:
        """A server; with `shard=(id, count)` one whose events go to that shard of `count`."""
        guild_id = snowflake_on_shard(*shard) if shard is not None else snowflake()
        guild = Guild(guild_id, name, owner=self.owner)
        guild.members[self.owner.id] = self.owner
        guild.members[self.bot.id] = self.bot
        self.guilds[guild.id] = guild
        return guild

    def add_text_channel(self, guild: Guild, name: str = "general") -> Channel:
        channel = Channel(snowflake(), GUILD_TEXT, name=name, guild_id=guild.id)
        guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        return channel

    def add_role(self, guild: Guild, name: str) -> str:
        role_id = snowflake()
        guild.roles[role_id] = name
        return role_id

    def grant(self, guild: Guild, user: User, permissions: int) -> None:
        """Give `user` extra permission bits in `guild` (e.g. MANAGE_CHANNELS)."""
        guild.grants[user.id] = guild.grants.get(user.id, 0) | permissions

    def dm_channel(self, user: User) -> Channel:
        """The DM channel between `user` and the bot (created on first use)."""
        for channel in self.channels.values():
            if channel.type == DM and channel.recipient == user:
                return channel
        channel = Channel(snowflake(), DM, recipient=user)
        self.channels[channel.id] = channel
        return channel

    async def create_thread(
        self, parent: Channel, owner: User, name: str = "thread", *, starter: JSON | None = None
    ) -> Channel:
        """A public thread under `parent` (from `starter` if given), announced by THREAD_CREATE."""
        guild = self.guilds[str(parent.guild_id)]
        thread = Channel(
            starter["id"] if starter else snowflake(),
            PUBLIC_THREAD,
            name=name,
            guild_id=guild.id,
            parent_id=parent.id,
            owner_id=owner.id,
        )
        guild.channels[thread.id] = thread
        self.channels[thread.id] = thread
        await self.dispatch("THREAD_CREATE", {**thread.payload(), "newly_created": True})
        return thread

    # --- what users do ------------------------------------------------------------------------

    async def user_message(
        self,
        channel: Channel,
        author: User,
        content: str,
        *,
        reply_to: JSON | str | None = None,
        mentions: list[User] | None = None,
        mention_roles: list[str] | None = None,
        mention_everyone: bool = False,
        message_type: int | None = None,
        files: list[tuple[str, bytes, str] | tuple[str, bytes, str, str]] | None = None,
    ) -> JSON:
        """`author` posts `content` in `channel`: stored, then dispatched as MESSAGE_CREATE.

        `files`: (filename, bytes, content type) attached to it, served at their CDN URL.

        Mentions are taken from `<@id>` in the content unless given; a reply
        mentions the replied author (Discord's default reply ping).
        """
        reference = self.message(channel, reply_to) if isinstance(reply_to, str) else reply_to
        if mentions is None:
            ids = re.findall(r"<@!?(\d+)>", content)
            mentions = [self.users[i] for i in ids if i in self.users]
            if reference is not None:
                replied = self.users.get(reference["author"]["id"])
                if replied is not None and replied not in mentions:
                    mentions.append(replied)
        if mention_roles is None:
            mention_roles = re.findall(r"<@&(\d+)>", content)
        guild = self.guilds.get(str(channel.guild_id)) if channel.guild_id else None
        data = message_payload(
            channel=channel,
            author=author,
            content=content,
            mentions=mentions,
            mention_roles=mention_roles,
            mention_everyone=mention_everyone,
            reference=reference,
            message_type=message_type,
            member=guild.member_payload(author) if guild else None,
        )
        data["attachments"] = [self._attach(channel, *file) for file in files or []]
        channel.messages[data["id"]] = data
        await self.dispatch("MESSAGE_CREATE", data)
        return data

    async def edit_user_message(self, channel: Channel, message: JSON, content: str) -> JSON:
        """The author edits their message: stored, then dispatched as MESSAGE_UPDATE (the whole
        message, as Discord sends it now)."""
        stored = channel.messages[message["id"]]
        ids = re.findall(r"<@!?(\d+)>", content)
        stored.update(
            content=content, edited_timestamp=iso_now(),
            mentions=[self.users[i].payload() for i in ids if i in self.users],
        )
        await self.dispatch("MESSAGE_UPDATE", dict(stored))
        return stored

    async def delete_user_message(self, channel: Channel, message: JSON) -> None:
        """The author deletes their message: dispatched as MESSAGE_DELETE (ids only)."""
        channel.messages.pop(message["id"], None)
        data: JSON = {"id": message["id"], "channel_id": channel.id}
        if channel.guild_id:
            data["guild_id"] = channel.guild_id
        await self.dispatch("MESSAGE_DELETE", data)
    def _attach(self, channel: Channel, filename: str, data: bytes, content_type: str, url: str = "") -> JSON:
        """An attachment served here; `url` makes its payload name another place (a forged one)."""
        attachment_id = snowflake()
        self.files[attachment_id] = data
        url = url or f"http://127.0.0.1:{self.port}/attachments/{channel.id}/{attachment_id}/{filename}"
        return {
            "id": attachment_id, "filename": filename, "size": len(data), "url": url, "proxy_url": url,
            "content_type": content_type,
        }

    async def _attachment(self, request: web.Request) -> web.Response:
        """A CDN URL: no Authorization needed (Discord signs the URL itself)."""
        attachment_id = request.match_info["attachment_id"]
        self.downloads.append(attachment_id)
        self._changed.set()
        if self.downloads_fail is not None:
            return web.Response(status=self.downloads_fail, text="refused")
        if attachment_id not in self.files:
            return web.Response(status=404, text="not found")
        return web.Response(body=self.files[attachment_id], content_type="application/octet-stream")

    async def slash_command(
        self,
        user: User,
        channel: Channel,
        name: str,
        *,
        subcommand: str | None = None,
        options: dict[str, Any] | None = None,
        focused: str | None = None,
    ) -> Interaction:
        """`user` runs `/name [subcommand] options…` in `channel`; returns the interaction.

        With `focused`, it is an autocomplete request for that option instead.
        """
        filled = [
            command_option(key, value, focused=key == focused) for key, value in (options or {}).items()
        ]
        if subcommand is not None:
            filled = [{"name": subcommand, "type": 1, "options": filled}]
        data: JSON = {"name": name, "type": 1, "options": filled}
        return await self._interact(user, channel, data, kind=4 if focused else 2)

    async def message_command(self, user: User, channel: Channel, name: str, target: JSON) -> Interaction:
        """`user` picks Apps → `name` on the message `target` (a message context menu)."""
        data: JSON = {
            "name": name,
            "type": 3,
            "target_id": target["id"],
            "resolved": {"messages": {target["id"]: target}},
        }
        return await self._interact(user, channel, data, kind=2)

    async def press_button(self, user: User, channel: Channel, message: JSON, custom_id: str) -> Interaction:
        """`user` presses the button `custom_id` on `message` (which must carry it now)."""
        stored = self._stored(str(message["channel_id"]), str(message["id"]))
        rows = stored.get("components") or []
        ids = [c.get("custom_id") for row in rows for c in row.get("components", [])]
        if custom_id not in ids:
            raise AssertionError(f"message {message['id']} carries no button {custom_id!r} (has {ids})")
        data: JSON = {"custom_id": custom_id, "component_type": 2}
        payload = self._interaction_payload(user, channel, data, kind=3)
        payload["message"] = stored
        interaction = Interaction(payload["id"], payload["token"], payload, self.clock.monotonic())
        self.interactions[interaction.id] = interaction
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def submit_modal(
        self, user: User, channel: Channel, opened_by: Interaction, values: dict[str, str]
    ) -> Interaction:
        """`user` submits the modal `opened_by` was answered with, its text inputs set to `values`
        (sent back in the shape the modal came: action rows, or labels around each input)."""
        modal = next((c["data"] for c in opened_by.callbacks if c.get("type") == MODAL), None)
        if modal is None:
            raise AssertionError("that interaction was not answered with a modal")

        def filled(item: JSON) -> JSON:
            return {"type": 4, "custom_id": item["custom_id"], "value": values.get(item["custom_id"], "")}

        rows = [
            {"type": 18, "component": filled(row["component"])} if "component" in row
            else {"type": 1, "components": [filled(i) for i in row.get("components", [])]}
            for row in modal.get("components", [])
        ]
        data: JSON = {"custom_id": modal["custom_id"], "components": rows}
        payload = self._interaction_payload(user, channel, data, kind=5)
        interaction = Interaction(payload["id"], payload["token"], payload, self.clock.monotonic())
        self.interactions[interaction.id] = interaction
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def _interact(self, user: User, channel: Channel, data: JSON, *, kind: int) -> Interaction:
        command = self._find_command(data["name"], channel.guild_id)
        if command is not None:
            data["id"] = command["id"]
            if command.get("guild_id"):
                data["guild_id"] = command["guild_id"]
        payload = self._interaction_payload(user, channel, data, kind=kind)
        interaction = Interaction(payload["id"], payload["token"], payload, self.clock.monotonic())
        self.interactions[interaction.id] = interaction
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    # --- what the test reads ------------------------------------------------------------------

    def message(self, channel: Channel, message_id: str) -> JSON:
        return channel.messages[message_id]

    def bot_messages(self, channel: Channel) -> list[JSON]:
        """The bot's messages in `channel`, oldest first, as users see them now."""
        return [m for m in channel.messages.values() if m["author"]["id"] == self.bot.id]

    def bot_text(self, channel: Channel) -> str:
        """Everything the bot shows in `channel`, its messages joined in order."""
        return "".join(m["content"] for m in self.bot_messages(channel))

    def calls_to(self, method: str, route: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.route == route]

    def writes(self, channel: Channel | None = None) -> list[Call]:
        """Message creates and edits (successful or not), optionally in one channel."""
        routes = {
            ("POST", "/channels/{channel_id}/messages"),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}"),
        }
        return [
            c
            for c in self.calls
            if (c.method, c.route) in routes and (channel is None or c.channel_id == channel.id)
        ]

    @property
    def rate_limited(self) -> list[Call]:
        return [c for c in self.calls if c.status == 429]

    async def wait_for(self, predicate: Any, within: float = 5.0) -> None:
        """Wait until `predicate()` is true, re-checking after every change the fake sees."""
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    @property
    def connected(self) -> bool:
        return any(s.identified and not s.ws.closed for s in self._sessions)

    def connected_shards(self) -> list[tuple[int, int]]:
        """The (shard id, shard count) of every identified session, sorted (one per session)."""
        return sorted(s.shard for s in self._sessions if s.identified and not s.ws.closed)

    # --- gateway ------------------------------------------------------------------------------

    async def dispatch(self, event: str, data: JSON) -> None:
        """Send a dispatch (op 0) to every identified session of the event's shard: a server's
        events to shard `(guild_id >> 22) % shard_count`, the rest (DMs) to shard 0."""
        guild_id = data.get("guild_id") if isinstance(data, dict) else None
        for session in list(self._sessions):
            if not session.identified or session.ws.closed or not session.receives(guild_id):
                continue
            body = self._visible_to(session, event, data)
            self.delivered.append((session.shard[0], event, data.get("id")))
            session.seq += 1
            with contextlib.suppress(ConnectionError):
                await session.ws.send_str(json.dumps({"op": 0, "t": event, "s": session.seq, "d": body}))

    def _visible_to(self, session: _Session, event: str, data: JSON) -> JSON:
        """Without the Message Content intent, guild messages lose their content.

        Discord keeps it for DMs, for messages that mention the bot and for the
        bot's own messages.
        """
        if event not in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
            return data
        if session.intents & MESSAGE_CONTENT_INTENT or "guild_id" not in data:
            return data
        mentioned = any(u["id"] == self.bot.id for u in data.get("mentions", []))
        if mentioned or data["author"]["id"] == self.bot.id:
            return data
        return {**data, "content": "", "embeds": [], "attachments": [], "components": []}

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session = _Session(ws)
        self._sessions.append(session)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}}))
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                await self._on_gateway_frame(session, json.loads(frame.data))
        finally:
            self._sessions.remove(session)
            self._changed.set()
        return ws

    async def _on_gateway_frame(self, session: _Session, frame: JSON) -> None:
        op = frame.get("op")
        if op == 1:  # heartbeat
            # Acknowledged a moment later, like over a network: discord.py measures latency
            # from a time it records after sending, and an instant ACK races that record.
            asyncio.get_running_loop().call_later(0.005, self._ack, session)
        elif op == 2:  # identify
            await self._identify(session, frame["d"])
        elif op == 6:  # resume
            session.identified = True
            session.seq += 1
            await session.ws.send_str(json.dumps({"op": 0, "t": "RESUMED", "s": session.seq, "d": {}}))

    def _ack(self, session: _Session) -> None:
        if not session.ws.closed:
            task = asyncio.ensure_future(session.ws.send_str(json.dumps({"op": 11})))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _identify(self, session: _Session, identify: JSON) -> None:
        self.identifies.append(identify)
        if identify.get("token") != self.token:
            await session.ws.close(code=4004, message=b"Authentication failed.")
            return
        session.intents = int(identify.get("intents", 0))
        if session.intents & MESSAGE_CONTENT_INTENT and not self.message_content_allowed:
            await session.ws.close(code=CLOSE_DISALLOWED_INTENTS, message=b"Disallowed intent(s).")
            return
        shard = identify.get("shard", [0, 1])
        if not (
            isinstance(shard, list) and len(shard) == 2 and all(type(n) is int for n in shard)
            and 0 <= shard[0] < shard[1]
        ):
            await session.ws.close(code=CLOSE_INVALID_SHARD, message=b"Invalid shard.")
            return
        if len(self.guilds) > self.guilds_per_shard * shard[1]:
            await session.ws.close(code=CLOSE_SHARDING_REQUIRED, message=b"Sharding required.")
            return
        session.shard = (shard[0], shard[1])
        session.identified = True
        guilds = [g for g in self.guilds.values() if session.receives(g.id)]
        ready = {
            "v": 10,
            "user": self.bot.payload(),
            "guilds": [{"id": g.id, "unavailable": True} for g in guilds],
            "shard": list(session.shard),
            "session_id": snowflake(),
            "resume_gateway_url": self.gateway_url,
            "application": {"id": self.application_id, "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        await self._send_dispatch(session, "READY", ready)
        for guild in guilds:
            await self._send_dispatch(session, "GUILD_CREATE", guild.create_payload())
        self._changed.set()

    async def _send_dispatch(self, session: _Session, event: str, data: JSON) -> None:
        session.seq += 1
        await session.ws.send_str(json.dumps({"op": 0, "t": event, "s": session.seq, "d": data}))

    # --- REST ---------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        body: Any = None
        if request.can_read_body and request.content_type == "application/json":
            body = await request.json()
        call = Call(
            request.method,
            "",
            request.path.removeprefix("/api/v10"),
            body,
            self.clock.monotonic(),
            params=dict(request.query),
        )
        self.calls.append(call)
        request[_CALL] = call
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            call.status = exc.status
            self._changed.set()
            raise
        call.status = response.status
        self._changed.set()
        return response

    def _handler_for(self, method: str, route: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            call: Call = request[_CALL]
            call.route = route
            call.channel_id = request.match_info.get("channel_id")
            call.message_id = request.match_info.get("message_id")
            try:
                self._authorize(request, route)
            except DiscordError as exc:
                return _json(exc.body, status=exc.status)
            verdict = self.limiter.check(
                _bucket_kind(method, route),
                request.match_info.get("channel_id"),
                counts_global=not route.startswith(("/interactions", "/webhooks")),
            )
            if not verdict.allowed:
                return _json(verdict.body, status=429, headers=verdict.headers)
            try:
                result, status = await self._serve(method, route, request, call.json or {})
            except DiscordError as exc:
                return _json(exc.body, status=exc.status, headers=verdict.headers)
            if _bucket_kind(method, route) == "create":
                call.message_id = result["id"]
            if status == 204:
                return web.Response(status=204, headers=verdict.headers)
            return _json(result, status=status, headers=verdict.headers)

        return handle

    def _authorize(self, request: web.Request, route: str) -> None:
        if route.startswith(("/interactions", "/webhooks")):
            return  # authenticated by the interaction token in the path
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise DiscordError(401, "401: Unauthorized")

    async def _serve(self, method: str, route: str, request: web.Request, body: JSON) -> tuple[Any, int]:
        m = request.match_info
        match method, route:
            case "GET", "/users/@me":
                return self.bot.payload(), 200
            case "GET", "/oauth2/applications/@me":
                return application_payload(
                    self.application_id,
                    self.bot,
                    self.owner,
                    message_content=self.message_content_allowed,
                ), 200
            case "GET", "/gateway":
                return {"url": self.gateway_url}, 200
            case "GET", "/gateway/bot":
                return {
                    "url": self.gateway_url,
                    "shards": self.recommended_shards,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 1000,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }, 200
            case "POST", "/users/@me/channels":
                return self.dm_channel(self.users[body["recipient_id"]]).payload(), 200
            case "GET", "/channels/{channel_id}":
                return self._channel(m["channel_id"]).payload(), 200
            case "POST", "/channels/{channel_id}/typing":
                self._channel(m["channel_id"])
                return None, 204
            case "GET", "/channels/{channel_id}/messages":
                return self._history(self._channel(m["channel_id"]), request.query), 200
            case "POST", "/channels/{channel_id}/messages":
                return await self._create_message(self._channel(m["channel_id"]), body), 200
            case "GET", "/channels/{channel_id}/messages/{message_id}":
                return self._stored(m["channel_id"], m["message_id"]), 200
            case "PATCH", "/channels/{channel_id}/messages/{message_id}":
                return await self._edit_message(m["channel_id"], m["message_id"], body), 200
            case "DELETE", "/channels/{channel_id}/messages/{message_id}":
                self._channel(m["channel_id"]).messages.pop(m["message_id"], None)
                if m["message_id"] in self.timelines:
                    self.timelines[m["message_id"]].record("", at=self.clock.monotonic())
                return None, 204
            case "POST", "/channels/{channel_id}/messages/{message_id}/threads":
                parent = self._channel(m["channel_id"])
                starter = self._stored(parent.id, m["message_id"])
                thread = await self.create_thread(
                    parent, self.bot, body.get("name", "thread"), starter=starter
                )
                return thread.payload(), 201
            case "GET", "/applications/{app_id}/commands":
                return self.commands.get(None, []), 200
            case "GET", "/applications/{app_id}/guilds/{guild_id}/commands":
                return self.commands.get(m["guild_id"], []), 200
            case "PUT", "/applications/{app_id}/commands":
                return self._register(None, request[_CALL].json or []), 200
            case "PUT", "/applications/{app_id}/guilds/{guild_id}/commands":
                return self._register(m["guild_id"], request[_CALL].json or []), 200
            case "POST", "/interactions/{interaction_id}/{token}/callback":
                return self._callback(m["interaction_id"], m["token"], body), 200
            case "POST", "/webhooks/{app_id}/{token}":
                interaction = self._interaction_by_token(m["token"])
                message = self._interaction_message(interaction, body)
                interaction.followups.append(message)
                interaction._touch()
                return message, 200
            case "GET", "/webhooks/{app_id}/{token}/messages/{message_id}":
                return self._interaction_target(m["token"], m["message_id"]), 200
            case "PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}":
                target = self._interaction_target(m["token"], m["message_id"])
                target.update({k: v for k, v in body.items() if k in ("content", "embeds", "flags")})
                target["edited_timestamp"] = iso_now()
                self._interaction_by_token(m["token"])._touch()
                return target, 200
            case "DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}":
                return None, 204
        raise DiscordError(404, "404: Not Found")

    def _channel(self, channel_id: str) -> Channel:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise DiscordError(404, "Unknown Channel", 10003) from None

    def _stored(self, channel_id: str, message_id: str) -> JSON:
        try:
            return self._channel(channel_id).messages[message_id]
        except KeyError:
            raise DiscordError(404, "Unknown Message", 10008) from None

    def _history(self, channel: Channel, query: Any) -> list[JSON]:
        """`GET …/messages`: newest first, `limit` (max 100), `before` / `after` ids."""
        limit = min(int(query.get("limit", 50)), 100)
        messages = list(channel.messages.values())
        if "before" in query:
            messages = [x for x in messages if int(x["id"]) < int(query["before"])]
        if "after" in query:
            after = [x for x in messages if int(x["id"]) > int(query["after"])]
            return list(reversed(after[:limit]))
        return list(reversed(messages))[:limit]

    async def _create_message(self, channel: Channel, body: JSON) -> JSON:
        if not str(body.get("content") or "") and not body.get("embeds"):
            raise DiscordError(400, "Cannot send an empty message", 50006)
        if len(str(body.get("content") or "")) > 2000:
            raise DiscordError(400, "Invalid Form Body: content must be 2000 or fewer in length.", 50035)
        reference = None
        if body.get("message_reference"):
            ref = body["message_reference"]
            ref_channel = self._channel(str(ref.get("channel_id") or channel.id))
            reference = ref_channel.messages.get(str(ref["message_id"]))
            if reference is None and ref.get("fail_if_not_exists", True):
                raise DiscordError(400, "Invalid Form Body: Unknown message", 50035)
        data = message_payload(
            channel=channel,
            author=self.bot,
            content=str(body.get("content") or ""),
            reference=reference,
        )
        data["embeds"] = body.get("embeds") or []
        data["components"] = body.get("components") or []
        channel.messages[data["id"]] = data
        self._shown(data)
        if self.echo_own_messages:
            await self.dispatch("MESSAGE_CREATE", data)
        return data

    async def _edit_message(self, channel_id: str, message_id: str, body: JSON) -> JSON:
        message = self._stored(channel_id, message_id)
        if message["author"]["id"] != self.bot.id:
            raise DiscordError(403, "Cannot edit a message authored by another user", 50005)
        if len(str(body.get("content") or "")) > 2000:
            raise DiscordError(400, "Invalid Form Body: content must be 2000 or fewer in length.", 50035)
        for key in ("content", "embeds", "flags", "components"):
            if key in body:
                message[key] = body[key]
        message["edited_timestamp"] = iso_now()
        self._shown(message)
        if self.echo_own_messages:
            await self.dispatch("MESSAGE_UPDATE", message)
        return message

    def _shown(self, message: JSON) -> None:
        timeline = self.timelines.setdefault(
            message["id"], Timeline(str(message["channel_id"]), message["id"])
        )
        timeline.record(str(message.get("content") or ""), at=self.clock.monotonic())

    def _register(self, guild_id: str | None, commands: list[JSON]) -> list[JSON]:
        """Bulk overwrite: the commands as Discord echoes them back, with ids."""
        registered = []
        for command in commands:
            permissions = command.get("default_member_permissions")
            if permissions is not None:  # Discord answers with a string of the bits
                command = {**command, "default_member_permissions": str(permissions)}
            registered.append(
                {
                    "id": snowflake(),
                    "application_id": self.application_id,
                    "version": snowflake(),
                    "type": 1,
                    "description": "",
                    "default_member_permissions": None,
                    "nsfw": False,
                    **command,
                    **({"guild_id": guild_id} if guild_id else {}),
                }
            )
        self.commands[guild_id] = registered
        return registered

    def _find_command(self, name: str, guild_id: str | None) -> JSON | None:
        scopes = [guild_id, None] if guild_id else [None]
        for scope in scopes:
            for command in self.commands.get(scope, []):
                if command["name"] == name:
                    return command
        return None

    def _interaction_payload(self, user: User, channel: Channel, data: JSON, *, kind: int) -> JSON:
        payload: JSON = {
            "id": snowflake(),
            "application_id": self.application_id,
            "type": kind,
            "data": data,
            "token": f"interaction-token-{snowflake()}",
            "version": 1,
            "locale": "en-US",
            "attachment_size_limit": 8 * 1024 * 1024,
            "entitlements": [],
            "channel_id": channel.id,
            "channel": channel.payload(),
            "app_permissions": "2248473465835073",
        }
        if channel.guild_id is not None:
            guild = self.guilds[channel.guild_id]
            payload.update(
                guild_id=guild.id,
                guild_locale="en-US",
                guild={"id": guild.id, "locale": "en-US", "features": []},
                member=guild.member_payload(user, with_permissions=True),
                context=0,
                authorizing_integration_owners={"0": guild.id},
            )
        else:
            payload.update(user=user.payload(), context=1, authorizing_integration_owners={"0": "0"})
        return payload

    def _callback(self, interaction_id: str, token: str, body: JSON) -> JSON:
        interaction = self.interactions.get(interaction_id)
        if interaction is None or interaction.token != token:
            raise DiscordError(404, "Unknown interaction", 10062)
        if interaction.callbacks:
            raise DiscordError(400, "Interaction has already been acknowledged.", 40060)
        now = self.clock.monotonic()
        if now - interaction.sent_at > RESPONSE_WINDOW:
            interaction.late = True
            raise DiscordError(404, "Unknown interaction", 10062)
        interaction.callbacks.append(body)
        interaction.callback_at = now
        kind = body.get("type")
        response: JSON = {"interaction": {"id": interaction.id, "type": interaction.payload["type"]}}
        if kind in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE):
            message = self._interaction_message(interaction, body.get("data") or {})
            interaction.original = message
            response["interaction"].update(
                response_message_id=message["id"],
                response_message_loading=kind == DEFERRED_CHANNEL_MESSAGE,
                response_message_ephemeral=bool(message["flags"] & EPHEMERAL),
            )
            response["resource"] = {"type": kind, "message": message}
        elif kind == AUTOCOMPLETE_RESULT:
            response["resource"] = {"type": kind}
        interaction._touch()
        return response

    def _interaction_message(self, interaction: Interaction, data: JSON) -> JSON:
        channel = self.channels[interaction.payload["channel_id"]]
        message = message_payload(channel=channel, author=self.bot, content=str(data.get("content") or ""))
        message["flags"] = int(data.get("flags") or 0)
        message["embeds"] = data.get("embeds") or []
        message["allowed_mentions"] = data.get("allowed_mentions")
        return message

    def _interaction_by_token(self, token: str) -> Interaction:
        for interaction in self.interactions.values():
            if interaction.token == token:
                return interaction
        raise DiscordError(404, "Unknown Webhook", 10015)

    def _interaction_target(self, token: str, message_id: str) -> JSON:
        interaction = self._interaction_by_token(token)
        if message_id == "@original":
            if interaction.original is None:
                raise DiscordError(404, "Unknown Message", 10008)
            return interaction.original
        for message in interaction.followups:
            if message["id"] == message_id:
                return message
        raise DiscordError(404, "Unknown Message", 10008)


def _bucket_kind(method: str, route: str) -> str | None:
    if (method, route) == ("POST", "/channels/{channel_id}/messages"):
        return "create"
    if (method, route) == ("PATCH", "/channels/{channel_id}/messages/{message_id}"):
        return "edit"
    return None


def _json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py only parses the body as JSON when Content-Type is exactly this.
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


__all__ = [
    "THREAD_CREATED", "Call", "FakeDiscord", "Limits", "pings_anyone", "shard_of", "snowflake_on_shard",
]
