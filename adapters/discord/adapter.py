"""The Discord adapter: a discord.py client that turns messages into the core's turns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial

import discord
import yarl
from discord import app_commands

from adapters.discord.commands import CommandRunner, build_commands
from adapters.discord.files import DiscordFiles
from adapters.discord.intake import Route, Router, dm_key, thread_key
from adapters.discord.invite import portal_url
from adapters.discord.messages import author_name, prompt_text
from adapters.discord.presses import answer_press
from adapters.discord.shards import ShardPlan, plan_shards, shard_taken
from adapters.discord.summaries import DiscordSummaries, build_summary_commands
from adapters.discord.surface import (
    NO_PINGS,
    PLATFORM,
    DiscordSurface,
    Pace,
)
from bot.config import ConfigError, DiscordSettings, Settings
from bot.contract import Adapter, Author, ConversationKey, Core, Turn
from bot.contract.budgets import LeaseTaken
from bot.ops import metrics

log = logging.getLogger(__name__)

READY_TIMEOUT = 60.0  # start() returns after this even if Discord has not said READY yet
IDENTIFY_SPACING = 5.0  # Discord takes one IDENTIFY per 5 s (max_concurrency 1): discord.py's wait

# The bot never joins voice: silence discord.py's start-up warnings about voice libraries.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


def intents() -> discord.Intents:
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = True  # privileged: enabled in the developer portal
    return wanted


def point_at(settings: DiscordSettings) -> None:
    """DISCORD_API_URL / DISCORD_GATEWAY_URL: talk to another Discord (a local fake in tests).

    discord.py keeps both as class attributes, so this is process-wide.
    """
    if settings.api_url:
        discord.http.Route.BASE = settings.api_url.rstrip("/")
    if settings.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


def intent_refused(application_id: int | None) -> ConfigError:
    return ConfigError(
        "Discord refused the Message Content intent (it is not enabled for this bot), which "
        "the bot needs to read messages. "
        f"Enable it at {portal_url(application_id)}: Bot → Privileged Gateway Intents → "
        "MESSAGE CONTENT INTENT, save, then restart the bot."
    )


def token_refused() -> ConfigError:
    return ConfigError(
        "Discord refused DISCORD_BOT_TOKEN (401 Unauthorized). Copy the bot token again from "
        "https://discord.com/developers/applications → your app → Bot → Reset Token."
    )


def skip_unparsable_events(state: discord.state.ConnectionState[discord.Client]) -> None:
    """A gateway event discord.py cannot parse is logged and dropped.

    Left alone, it ends the shard's reader and the sharded client closes every shard.
    """
    for event, parse in list(state.parsers.items()):

        def guarded(data: object, event: str = event, parse: object = parse) -> None:
            try:
                parse(data)  # type: ignore[operator]
            except Exception:
                log.exception("dropped a Discord %s event discord.py could not parse", event)

        state.parsers[event] = guarded


class _Client(discord.AutoShardedClient):
    """Every process runs the sharded client, holding one shard or several (`ShardPlan`)."""

    def __init__(self, adapter: DiscordAdapter, guild_ready_timeout: float, identify_spacing: float) -> None:
        super().__init__(
            intents=intents(),
            allowed_mentions=NO_PINGS,
            guild_ready_timeout=guild_ready_timeout,
            max_messages=None,  # no message cache: routing reads what each event carries
        )
        self.adapter = adapter
        self.identify_spacing = identify_spacing
        self.tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(self)
        skip_unparsable_events(self._connection)

    def use(self, plan: ShardPlan) -> None:
        self.shard_count = plan.count
        self.shard_ids = list(plan.ids)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        if not initial:
            await asyncio.sleep(self.identify_spacing)

    async def setup_hook(self) -> None:
        await self.adapter.sync_commands()

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_message(message, received_at=time.monotonic())

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        await self.adapter.on_edit(payload)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.adapter.on_delete(payload)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        # Slash commands go to the tree; the answers' buttons and the 👎 reason modal come here.
        if interaction.type in (discord.InteractionType.component, discord.InteractionType.modal_submit):
            await self.adapter.on_button(interaction)


class DiscordAdapter(Adapter):
    name = "discord"
    reaches_earlier_messages = True

    def __init__(
        self,
        settings: Settings,
        engine: Core,
        *,
        guild_ready_timeout: float = 2.0,
        identify_spacing: float = IDENTIFY_SPACING,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.pace = Pace(engine.pacer)
        self.client = _Client(self, guild_ready_timeout, identify_spacing)
        self.plan: ShardPlan | None = None  # known once started
        self.files = DiscordFiles(self.client, self.pace)
        self.router = Router(
            self.client,
            engine.knows,
            lambda sender: engine.heeds(PLATFORM, sender),
            self.pace,
            threads=settings.discord.threads,
            files=self.files,
        )
        self.commands = CommandRunner(settings, engine, self.router)
        build_commands(self.client.tree, self.commands, engine.preset_names, engine.command_limits)
        build_summary_commands(self.client.tree, DiscordSummaries(engine, self.router, self.pace))
        self._connection: asyncio.Task[None] | None = None
        self._surfaces: set[DiscordSurface] = set()

    @property
    def connected(self) -> bool:
        """Ready, and every shard of this process connected."""
        if self.plan is None or not self.client.is_ready() or self.client.is_closed():
            return False
        return all(self.shard_connected(shard) for shard in self.plan.ids)

    def shard_connected(self, shard: int) -> bool:
        info = self.client.get_shard(shard)
        return info is not None and not info.is_closed()

    def shard_latency(self, shard: int) -> float:
        info = self.client.get_shard(shard)
        return info.latency if info is not None else float("inf")

    def part_checks(self) -> dict[str, Callable[[], bool]]:
        """One readiness check per shard held ("shard 0", …)."""
        ids = self.plan.ids if self.plan is not None else ()
        return {f"shard {shard}": partial(self.shard_connected, shard) for shard in ids}

    async def start(self) -> None:
        """Log in, connect to the gateway and wait for READY (or a fatal refusal)."""
        token = self.settings.discord.bot_token
        if not token:
            raise ConfigError("DISCORD_BOT_TOKEN is not set.")
        point_at(self.settings.discord)
        try:
            await self.client.login(token)
        except discord.LoginFailure:
            await self.client.close()
            raise token_refused() from None
        await self._hold_shards()
        self._connection = asyncio.create_task(self._connect(), name="discord gateway")
        # A fatal error after start() returned is logged by _connect; readiness then fails.
        self._connection.add_done_callback(lambda task: task.cancelled() or task.exception())
        ready = asyncio.create_task(self.client.wait_until_ready())
        await asyncio.wait(
            {ready, self._connection}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        ready.cancel()
        if self._connection.done():
            self._connection.result()  # raises the fatal error, already explained
        if not self.client.is_ready():
            log.warning("Discord has not sent READY after %.0fs; still trying", READY_TIMEOUT)

    async def _hold_shards(self) -> None:
        """Choose the shards and take their leases; a shard held elsewhere stops the start."""
        plan = await plan_shards(self.settings.discord, self.client.http)
        try:
            await self.engine.leases.acquire(plan.leases)
        except LeaseTaken as taken:
            raise shard_taken(taken) from None
        self.plan = plan
        self.client.use(plan)
        for shard in plan.ids:
            metrics.watch_discord_shard(
                shard, partial(self.shard_connected, shard), partial(self.shard_latency, shard)
            )
        log.info("Discord shards %s of %d", ", ".join(map(str, plan.ids)), plan.count)

    async def _connect(self) -> None:
        delay = 1.0
        while True:
            try:
                await self.client.connect(reconnect=True)
                return
            except discord.PrivilegedIntentsRequired:
                error = intent_refused(self.client.application_id)
                log.error("%s", error)
                raise error from None
            except discord.ConnectionClosed as closed:
                if closed.code == 4004:
                    log.error("%s", token_refused())
                    raise token_refused() from None
                raise
            except Exception:
                if self.client.is_closed():
                    return
                # discord.py ends its gateway loop on an event it cannot parse; connect again,
                # closing the old socket first so its heartbeat thread stops.
                log.exception("the Discord gateway connection failed; reconnecting in %.0fs", delay)
                if self.client.ws is not None:
                    with contextlib.suppress(Exception):
                        await self.client.ws.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def stop(self) -> None:
        await self.client.close()
        for surface in list(self._surfaces):
            await surface.close()
        if self._connection is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._connection
        if self.plan is not None:
            await self.engine.leases.release()  # after the shards closed: no overlap

    async def sync_commands(self) -> None:
        """Register the slash commands: in one server (DISCORD_GUILD_ID, instant) or globally."""
        tree = self.client.tree
        try:
            if self.settings.discord.guild_id:
                guild = discord.Object(int(self.settings.discord.guild_id))
                tree.copy_global_to(guild=guild)
                synced = await tree.sync(guild=guild)
            else:
                synced = await tree.sync()
        except discord.HTTPException as exc:
            log.error(
                "could not register the slash commands (%s); was the bot invited with the "
                "applications.commands scope? `python -m bot check` prints the right link.",
                exc,
            )
            return
        log.info("registered %d slash commands", len(synced))

    async def on_message(self, message: discord.Message, *, received_at: float) -> None:
        try:
            await self._on_message(message, received_at)
        except Exception:
            log.exception("could not handle message %s", message.id)

    async def _on_message(self, message: discord.Message, received_at: float) -> None:
        route = await self.router.route(message)
        if route is None:
            return
        # Discord may deliver an event twice (resumes, several replicas): answer once.
        if not await self.engine.claim(PLATFORM, str(message.id)):
            return
        me = self.client.user
        assert me is not None
        author = Author(str(message.author.id), author_name(message))
        if route.context_only:
            await self.engine.note(
                route.conversation, author, prompt_text(message, me), str(message.id),
                attachments=self.files.attachments(message), fetch_file=self.files.fetch,
            )
            return
        if route.open_thread:
            route = await self.router.open_thread(message)
        conversation = route.conversation
        surface = self._surface(route)
        turn = Turn(
            conversation=conversation,
            author=author,
            text=prompt_text(message, me),
            message_id=str(message.id),
            surface=surface,
            backfill=route.backfill,
            received_at=received_at,
            event_id=str(message.id),
            attachments=self.files.attachments(message),
            fetch_file=self.files.fetch,
        )
        self._surfaces.add(surface)
        task = self.engine.submit(turn)
        task.add_done_callback(lambda _: self._finished(surface))

    async def on_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """A message was edited (MESSAGE_UPDATE): the history follows; the question being
        answered, or the last one answered, is answered again in place."""
        try:
            message = payload.message
            edited_at = payload.data.get("edited_timestamp")
            if not edited_at:
                return  # an embed resolved, a pin: not an edit of the text
            route = await self.router.route(message)
            if route is None or route.context_only or route.open_thread:
                return
            me = self.client.user
            assert me is not None
            surface = self._surface(route)
            turn = Turn(
                conversation=route.conversation,
                author=Author(str(message.author.id), author_name(message)),
                text=prompt_text(message, me),
                message_id=str(message.id),
                surface=surface,
                event_id=f"{message.id}:edited:{edited_at}",
                edited_at=_seconds(edited_at),
            )
            await self.engine.edited(turn)
        except Exception:
            log.exception("could not handle an edit of message %s", payload.message_id)

    async def on_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        """A message was deleted (MESSAGE_DELETE, ids only): it leaves the history of the
        conversation it can belong to (a DM, a thread, or a reply chain this process knows)."""
        try:
            message_id, channel_id = payload.message_id, payload.channel_id
            if payload.guild_id is None:
                candidates = [dm_key(channel_id)]
            else:
                guild = str(payload.guild_id)
                channel = self.client.get_channel(channel_id)
                candidates = []
                if isinstance(channel, discord.Thread):
                    candidates.append(thread_key(channel))
                root = self.router.roots.get(message_id, message_id)
                candidates.append(ConversationKey(PLATFORM, guild, str(channel_id), str(root)))
            for conversation in candidates:
                if await self.engine.deleted(conversation, str(message_id)):
                    return
        except Exception:
            log.exception("could not handle the deletion of message %s", payload.message_id)

    async def on_button(self, interaction: discord.Interaction) -> None:
        """A press on an answer's button (`adapters.discord.presses`)."""
        try:
            await answer_press(self.engine, interaction, can_admin=self.commands.can_admin(interaction))
        except Exception:
            log.exception("could not handle a button press %s", interaction.id)

    async def surface_for(self, conversation: ConversationKey, message_id: str) -> DiscordSurface | None:
        """A surface for a message posted before a restart (the core marks cut answers with it)."""
        if conversation.platform != PLATFORM or not conversation.channel.isdigit():
            return None
        # A thread conversation's messages live in the thread; the others' in the channel.
        thread = await self._thread(conversation.thread)
        channel_id = thread.id if thread is not None else int(conversation.channel)
        channel = self.client.get_partial_messageable(channel_id)
        return DiscordSurface(channel, reply_to=int(message_id), pace=self.pace)

    async def _thread(self, thread_id: str) -> discord.Thread | None:
        """The thread of that id, also when it is archived and not in the cache after a restart."""
        if not thread_id.isdigit():
            return None
        channel = self.client.get_channel(int(thread_id))
        if channel is None:
            try:  # a reply chain's "thread" is a message id: Discord answers 404
                channel = await self.client.fetch_channel(int(thread_id))
            except discord.HTTPException:
                return None
        return channel if isinstance(channel, discord.Thread) else None

    def _surface(self, route: Route) -> DiscordSurface:
        """Where an answer on `route` appears; what it posts joins the conversation's chain."""
        conversation = route.conversation
        return DiscordSurface(
            route.channel,
            reply_to=route.reply_to,
            pace=self.pace,
            on_post=lambda posted: self.router.remember_post(conversation, posted),
        )

    def _finished(self, surface: DiscordSurface) -> None:
        self._surfaces.discard(surface)
        surface.stop_typing()


def _seconds(iso: object) -> float:
    """Discord's ISO 8601 `edited_timestamp` as Unix seconds; 0 for none."""
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return 0.0
