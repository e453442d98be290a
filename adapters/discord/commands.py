"""`/persona …` and `/forget` as Discord slash commands; the core runs them.

Each subcommand's options are typed so Discord validates them (ranges,
choices, preset autocomplete); the adapter turns them back into the core's
command line (`persona temperature 0.3`) and shows the core's reply
ephemerally. Discord wants an answer within 3 s: a command that takes longer
is deferred ("thinking…") and answered with a follow-up.

Who may change a persona: in a server, members with Manage Channels (the
command's default permission in Discord, checked again here because server
admins can widen who sees the command) or users in PERSONA_ADMINS; in a DM,
the person in it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

import discord
from discord import app_commands

from adapters.discord.conversations import Router, dm_key, scope_of, thread_key
from adapters.discord.surface import MAX_CHARS, PLATFORM
from bot.config import Settings
from bot.engine import Engine
from bot.splitting import split_message
from bot.surface import Author, ConversationKey

log = logging.getLogger(__name__)

DEFER_AFTER = 2.0  # seconds; Discord drops interactions not answered within 3 s
WHO_MAY = "members with the Manage Channels permission"
FAILED = "Something went wrong running that command. Please try again."
FORGET_MENU = "Forget this conversation"


def build_commands(
    tree: app_commands.CommandTree[discord.Client],
    run: Callable[[discord.Interaction, str, discord.Message | None], Awaitable[None]],
    preset_names: Callable[[], list[str]],
) -> None:
    """Add `/persona` (with its subcommands) and `/forget` to `tree`; each calls `run`."""
    persona = app_commands.Group(
        name="persona",
        description="How the bot behaves in this channel",
        default_permissions=discord.Permissions(manage_channels=True),
        allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True),
        allowed_installs=app_commands.AppInstallationType(guild=True),
    )

    @persona.command(name="show", description="The persona in force here")
    async def show(interaction: discord.Interaction) -> None:
        await run(interaction, "persona show", None)

    @persona.command(name="list", description="The preset personas")
    async def list_(interaction: discord.Interaction) -> None:
        await run(interaction, "persona list", None)

    @persona.command(name="use", description="Switch this channel to a preset persona")
    @app_commands.describe(preset="A preset name (see /persona list)")
    async def use(interaction: discord.Interaction, preset: str) -> None:
        await run(interaction, f"persona use {preset}", None)

    @use.autocomplete("preset")
    async def preset_choices(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        typed = current.lower()
        names = [n for n in preset_names() if typed in n.lower()]
        return [app_commands.Choice(name=n, value=n) for n in names[:25]]

    @persona.command(name="set", description="Use your own system prompt in this channel")
    @app_commands.describe(prompt="The system prompt, e.g. 'You are a terse SRE.'")
    async def set_(interaction: discord.Interaction, prompt: app_commands.Range[str, 1, 6000]) -> None:
        await run(interaction, f"persona set {prompt}", None)

    @persona.command(name="model", description="The model this channel uses")
    @app_commands.describe(name="A model name, or 'default'")
    async def model(interaction: discord.Interaction, name: str) -> None:
        await run(interaction, f"persona model {name}", None)

    @persona.command(name="temperature", description="Sampling temperature (leave empty for the default)")
    async def temperature(
        interaction: discord.Interaction, value: app_commands.Range[float, 0.0, 2.0] | None = None
    ) -> None:
        await run(interaction, f"persona temperature {_or_default(value)}", None)

    @persona.command(name="max_tokens", description="Longest answer in tokens (empty for the default)")
    async def max_tokens(
        interaction: discord.Interaction, value: app_commands.Range[int, 1, 1_000_000] | None = None
    ) -> None:
        await run(interaction, f"persona max_tokens {_or_default(value)}", None)

    @persona.command(name="reasoning", description="Let reasoning models think first")
    async def reasoning(interaction: discord.Interaction, mode: Literal["on", "off", "default"]) -> None:
        await run(interaction, f"persona reasoning {mode}", None)

    @persona.command(name="reset", description="Back to the default persona")
    async def reset(interaction: discord.Interaction) -> None:
        await run(interaction, "persona reset", None)

    tree.add_command(persona)

    @tree.command(name="forget", description="Clear this conversation's memory")
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    @app_commands.allowed_installs(guilds=True, users=False)
    async def forget(interaction: discord.Interaction) -> None:
        await run(interaction, "forget", None)

    # Right-click a message → Apps: forget the conversation (reply chain) it belongs to.
    @tree.context_menu(name=FORGET_MENU)
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    @app_commands.allowed_installs(guilds=True, users=False)
    async def forget_message(interaction: discord.Interaction, message: discord.Message) -> None:
        await run(interaction, "forget", message)


def _or_default(value: float | None) -> str:
    return "default" if value is None else f"{value:g}"


class CommandRunner:
    """Runs one slash command through the core and answers it, ephemerally, in time."""

    def __init__(self, settings: Settings, engine: Engine, router: Router) -> None:
        self.settings = settings
        self.engine = engine
        self.router = router

    async def __call__(
        self, interaction: discord.Interaction, text: str, target: discord.Message | None
    ) -> None:
        # Every gateway session of the bot sees the interaction; only one answers it.
        if not await self.engine.claim("discord", f"interaction:{interaction.id}"):
            return
        work = asyncio.create_task(self._run(interaction, text, target))
        done, _ = await asyncio.wait({work}, timeout=DEFER_AFTER)
        if not done:
            await interaction.response.defer(ephemeral=True, thinking=True)
        reply = await work
        parts = split_message(reply, MAX_CHARS)
        if not interaction.response.is_done():
            await interaction.response.send_message(parts.pop(0), ephemeral=True)
        for part in parts:
            await interaction.followup.send(part, ephemeral=True)

    async def _run(self, interaction: discord.Interaction, text: str, target: discord.Message | None) -> str:
        try:
            conversation = await self.conversation_of(interaction, target)
            return await self.engine.command(
                text,
                scope=scope_of(interaction.channel, interaction.guild, interaction.channel_id or 0),
                conversation=conversation,
                actor=Author(str(interaction.user.id), interaction.user.display_name),
                can_admin=self.can_admin(interaction),
                who_may=self.who_may,
            )
        except Exception:
            log.exception("command %r failed", text.split(" ", 2)[:2])
            return FAILED

    def can_admin(self, interaction: discord.Interaction) -> bool:
        if interaction.guild_id is None:
            return True  # a DM's persona belongs to the person in it
        return interaction.permissions.manage_channels  # the engine adds PERSONA_ADMINS / PERSONA_OPEN

    @property
    def who_may(self) -> str:
        if self.settings.persona_admins:
            return f"{WHO_MAY} (or listed in PERSONA_ADMINS)"
        return WHO_MAY

    async def conversation_of(
        self, interaction: discord.Interaction, target: discord.Message | None
    ) -> ConversationKey | None:
        """The conversation a command means: the DM, the thread, the reply chain of `target`,
        or else your latest conversation in this channel."""
        channel, channel_id = interaction.channel, interaction.channel_id
        if channel_id is None:
            return None
        if interaction.guild_id is None:
            return dm_key(channel_id)
        if isinstance(channel, discord.Thread):
            return thread_key(channel)
        if target is not None:
            root = await self.router.root_of(target)
            return ConversationKey(PLATFORM, str(interaction.guild_id), str(channel_id), str(root))
        return self.router.last_conversation.get((interaction.user.id, channel_id))
