"""`/persona …` and `/forget` as Discord slash commands; the core runs them.

Each subcommand's options are typed so Discord validates them (ranges taken
from the core's `CommandLimits`, choices, preset autocomplete); the adapter
builds the core's command object from them (`PersonaTemperature(0.3)`) and
shows the core's reply ephemerally. Discord wants an answer within 3 s: a command that takes longer
is deferred ("thinking…") and answered with a follow-up.

Who may change a persona: in a server, members with Manage Channels (the
command's default permission in Discord, checked again here because server
admins can widen who sees the command) or users in PERSONA_ADMINS; in a DM,
the person in it.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

import discord
from discord import app_commands

from adapters.discord.intake import Router, dm_key, scope_of, thread_key
from adapters.discord.surface import MAX_CHARS, PLATFORM
from bot.config import Settings
from bot.contract import Author, ConversationKey, Core
from bot.contract.commands import (
    Command,
    CommandLimits,
    Forget,
    PersonaList,
    PersonaMaxTokens,
    PersonaModel,
    PersonaReasoning,
    PersonaReset,
    PersonaSet,
    PersonaShow,
    PersonaTemperature,
    PersonaUse,
    PersonaVision,
    parse,
)
from bot.delivery.splitting import split_message

log = logging.getLogger(__name__)

DEFER_AFTER = 2.0  # seconds; Discord drops interactions not answered within 3 s
WHO_MAY = "members with the Manage Channels permission"
FAILED = "Something went wrong running that command. Please try again."
FORGET_MENU = "Forget this conversation"


def build_commands(
    tree: app_commands.CommandTree[discord.Client],
    run: Callable[[discord.Interaction, Command, discord.Message | None], Awaitable[None]],
    preset_names: Callable[[], list[str]],
    limits: CommandLimits,
) -> None:
    """Add `/persona` (with its subcommands) and `/forget` to `tree`; each builds the core's
    command object from its typed options and calls `run`.

    The options' ranges are the core's `limits`, so Discord refuses what the core would.
    (This module evaluates its annotations when the functions are defined, as discord.py
    reads them: the ranges are values known only here.)
    """
    persona = app_commands.Group(
        name="persona",
        description="How the bot behaves in this channel",
        default_permissions=discord.Permissions(manage_channels=True),
        allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True),
        allowed_installs=app_commands.AppInstallationType(guild=True),
    )

    @persona.command(name="show", description="The persona in force here")
    async def show(interaction: discord.Interaction) -> None:
        await run(interaction, PersonaShow(), None)

    @persona.command(name="list", description="The preset personas")
    async def list_(interaction: discord.Interaction) -> None:
        await run(interaction, PersonaList(), None)

    @persona.command(name="use", description="Switch this channel to a preset persona")
    @app_commands.describe(preset="A preset name (see /persona list)")
    async def use(interaction: discord.Interaction, preset: str) -> None:
        await run(interaction, PersonaUse(preset.strip()), None)

    @use.autocomplete("preset")
    async def preset_choices(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        typed = current.lower()
        names = [n for n in preset_names() if typed in n.lower()]
        return [app_commands.Choice(name=n, value=n) for n in names[:25]]

    @persona.command(name="set", description="Use your own system prompt in this channel")
    @app_commands.describe(prompt="The system prompt, e.g. 'You are a terse SRE.'")
    async def set_(
        interaction: discord.Interaction, prompt: app_commands.Range[str, 1, limits.max_prompt_chars]
    ) -> None:
        await run(interaction, PersonaSet(prompt.strip()), None)

    @persona.command(name="model", description="The model this channel uses")
    @app_commands.describe(name="A model name, or 'default'")
    async def model(
        interaction: discord.Interaction, name: app_commands.Range[str, 1, limits.max_model_chars]
    ) -> None:
        name = name.strip()
        await run(interaction, PersonaModel(None if name.lower() == "default" else name), None)

    @persona.command(name="temperature", description="Sampling temperature (leave empty for the default)")
    async def temperature(
        interaction: discord.Interaction,
        value: app_commands.Range[float, limits.min_temperature, limits.max_temperature] | None = None,
    ) -> None:
        await run(interaction, PersonaTemperature(value), None)

    @persona.command(name="max_tokens", description="Longest answer in tokens (empty for the default)")
    async def max_tokens(
        interaction: discord.Interaction, value: app_commands.Range[int, 1, limits.max_tokens] | None = None
    ) -> None:
        await run(interaction, PersonaMaxTokens(value), None)

    @persona.command(name="reasoning", description="Let reasoning models think first")
    async def reasoning(interaction: discord.Interaction, mode: Literal["on", "off", "default"]) -> None:
        await run(interaction, PersonaReasoning(None if mode == "default" else mode == "on"), None)

    @persona.command(name="vision", description="Whether the model takes images")
    async def vision(interaction: discord.Interaction, mode: Literal["on", "off", "default"]) -> None:
        await run(interaction, PersonaVision(None if mode == "default" else mode == "on"), None)

    @persona.command(name="fallback", description="Models that answer when this channel's model cannot")
    @app_commands.describe(models="Models, comma separated (provider:model for others), or off, or default")
    async def fallback(interaction: discord.Interaction, models: app_commands.Range[str, 1, 1000]) -> None:
        await run(interaction, parse(f"persona fallback {models.strip()}"), None)

    @persona.command(name="summary", description="What summaries in this channel should do too")
    @app_commands.describe(prompt="e.g. 'In French, as a bulleted list', or default")
    async def summary(interaction: discord.Interaction, prompt: app_commands.Range[str, 1, 4000]) -> None:
        await run(interaction, parse(f"persona summary {prompt.strip()}"), None)

    @persona.command(name="tools", description="The operator's tool servers this channel's persona may use")
    @app_commands.describe(servers="Servers, comma separated, or all, or off, or default")
    async def tools(interaction: discord.Interaction, servers: app_commands.Range[str, 1, 1000]) -> None:
        await run(interaction, parse(f"persona tools {servers.strip()}"), None)

    @persona.command(name="reset", description="Back to the default persona")
    async def reset(interaction: discord.Interaction) -> None:
        await run(interaction, PersonaReset(), None)

    tree.add_command(persona)

    @tree.command(name="forget", description="Clear this conversation's memory")
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    @app_commands.allowed_installs(guilds=True, users=False)
    async def forget(interaction: discord.Interaction) -> None:
        await run(interaction, Forget(), None)

    # Right-click a message → Apps: forget the conversation (reply chain) it belongs to.
    @tree.context_menu(name=FORGET_MENU)
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    @app_commands.allowed_installs(guilds=True, users=False)
    async def forget_message(interaction: discord.Interaction, message: discord.Message) -> None:
        await run(interaction, Forget(), message)


class CommandRunner:
    """Runs one slash command through the core and answers it, ephemerally, in time."""

    def __init__(self, settings: Settings, engine: Core, router: Router) -> None:
        self.settings = settings
        self.engine = engine
        self.router = router

    async def __call__(
        self, interaction: discord.Interaction, command: Command, target: discord.Message | None
    ) -> None:
        # Every gateway session of the bot sees the interaction; only one answers it.
        # (An interaction id is a snowflake, unique among messages' ids too.)
        if not await self.engine.claim(PLATFORM, str(interaction.id)):
            return
        work = asyncio.create_task(self._run(interaction, command, target))
        done, _ = await asyncio.wait({work}, timeout=DEFER_AFTER)
        if not done:
            await interaction.response.defer(ephemeral=True, thinking=True)
        reply = await work
        parts = split_message(reply, MAX_CHARS)
        if not interaction.response.is_done():
            await interaction.response.send_message(parts.pop(0), ephemeral=True)
        for part in parts:
            await interaction.followup.send(part, ephemeral=True)

    async def _run(
        self, interaction: discord.Interaction, command: Command, target: discord.Message | None
    ) -> str:
        try:
            conversation = await self.conversation_of(interaction, target)
            return await self.engine.command(
                command,
                scope=scope_of(interaction.channel, interaction.guild, interaction.channel_id or 0),
                conversation=conversation,
                actor=Author(str(interaction.user.id), interaction.user.display_name),
                can_admin=self.can_admin(interaction),
                who_may=self.who_may,
            )
        except Exception:
            log.exception("command %s failed", type(command).__name__)
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
