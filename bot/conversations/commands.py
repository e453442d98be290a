"""The chat commands every surface understands: `/persona …` and `/forget`, run.

The command objects, their parser and their limits are the contract's
(`bot.contract.commands`); here they are run. The surface decides who may
change a persona and passes `can_admin` (plus `who_may`, the words that tell a
refused user who can); everything else is decided here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from bot.config import unknown_provider
from bot.contract import Author, ChannelScope, ConversationKey
from bot.contract.commands import (
    Command,
    CommandError,
    CommandLimits,
    Forget,
    Invalid,
    PersonaFallback,
    PersonaHelp,
    PersonaList,
    PersonaMaxTokens,
    PersonaModel,
    PersonaReset,
    PersonaSet,
    PersonaShow,
    PersonaSummary,
    PersonaTemperature,
    PersonaTools,
    PersonaTuning,
    PersonaUse,
    PersonaVision,
    check,
    parse,
)
from bot.conversations.history import Conversations
from bot.conversations.personas import Persona, PersonaStore
from bot.tools.choice import ToolCatalog

HELP = """**`/persona`** sets how the bot behaves in this channel.
• `/persona show`: the persona in force here
• `/persona list`: the presets
• `/persona use NAME`: switch to a preset
• `/persona set PROMPT`: your own system prompt
• `/persona model NAME|default`, `/persona temperature 0-2|default`, \
`/persona max_tokens N|default`, `/persona reasoning on|off|default`, \
`/persona vision on|off|default` (whether the model takes images)
• `/persona fallback MODEL[,MODEL…]|off|default`: the models that answer when the channel's cannot
• `/persona summary PROMPT|default`: what summaries here should do too (a language, a format)
• `/persona tools SERVER[,SERVER…]|all|off|default`: the operator's MCP servers the persona may use
• `/persona reset`: back to the default
• `/forget`: clear this conversation's memory"""

DEFAULT_PRESET = "assistant"  # bot/presets.toml: the preset whose prompt is the built-in default


def describe(persona: Persona, default_model: str, presets: Mapping[str, Persona] | None = None) -> str:
    name = f"preset `{persona.preset}`" if persona.preset else "a custom prompt"
    if persona.preset == "default":  # the settings' persona, named as `/persona list` names it
        builtin = (presets or {}).get(DEFAULT_PRESET)
        if builtin is not None and builtin.system_prompt == persona.system_prompt:
            name = f"the default persona (preset `{DEFAULT_PRESET}`)"
        else:
            name = "the default persona (BOT_SYSTEM_PROMPT)"
    lines = [f"This channel uses {name}."]
    lines.append(f"• model: `{persona.model or default_model}`")
    if persona.temperature is not None:
        lines.append(f"• temperature: {persona.temperature:g}")
    if persona.max_tokens is not None:
        lines.append(f"• max_tokens: {persona.max_tokens}")
    if persona.reasoning is not None:
        lines.append(f"• reasoning: {'on' if persona.reasoning else 'off'}")
    if persona.vision is not None:
        lines.append(f"• vision: {'on' if persona.vision else 'off'}")
    if persona.fallback is not None:
        chain = ", ".join(f"`{m}`" for m in persona.fallback) or "off"
        lines.append(f"• fallback: {chain}")
    if persona.summary_prompt:
        lines.append(f"• summary prompt: {_shortened(persona.summary_prompt, 200)}")
    if persona.set_by:
        lines.append(f"• set by {persona.set_by}")
    prompt = persona.system_prompt
    if len(prompt) > 600:
        prompt = prompt[:600] + "…"
    lines.append("> " + prompt.replace("\n", "\n> "))
    return "\n".join(lines)


class Commands:
    def __init__(
        self,
        personas: PersonaStore,
        conversations: Conversations,
        presets: dict[str, Persona],
        default_model: str,
        max_tokens_limit: int,
        providers: frozenset[str] = frozenset(),
        tools: ToolCatalog | None = None,
    ) -> None:
        self.tools = tools  # the operator's MCP servers: what `/persona tools` may choose from
        self.providers = providers  # besides Together: the prefixes a model may name
        self.personas = personas
        self.conversations = conversations
        self.presets = presets
        self.default_model = default_model
        self.limits = CommandLimits(max_tokens=max_tokens_limit)

    async def run(
        self,
        command: Command | str,
        *,
        scope: ChannelScope,
        conversation: ConversationKey | None,
        actor: Author,
        can_admin: bool,
        who_may: str = "",
    ) -> str:
        """Run one command (a typed line is parsed first); return the Markdown reply for its author."""
        if isinstance(command, str):
            command = parse(command)
        if isinstance(command, Invalid) and command.with_help:
            return f"{command.message}\n\n{HELP}"
        if isinstance(command, Forget):
            return await self._forget(conversation)
        if command.changes and not can_admin:
            who = who_may or "channel admins"
            return f"Sorry, only {who} may change this channel's persona. `/persona show` works for everyone."
        if isinstance(command, Invalid):
            return command.message
        try:
            check(command, self.limits)
            return await self._persona(command, scope, actor)
        except CommandError as error:
            return str(error)

    async def _forget(self, conversation: ConversationKey | None) -> str:
        if conversation is None:
            return "Use `/forget` inside a conversation (a thread, a reply chain or a DM)."
        forgot = await self.conversations.forget(conversation)
        return "Done: I have forgotten this conversation." if forgot else "There was nothing to forget here."

    async def _persona(self, command: Command, scope: ChannelScope, actor: Author) -> str:
        if isinstance(command, PersonaHelp):
            return HELP
        if isinstance(command, PersonaShow):
            persona = await self.personas.get(scope)
            shown = describe(persona, self.default_model, self.presets)
            return shown + (self.tools.describe(persona.tools) if self.tools else "")
        if isinstance(command, PersonaList):
            lines = [f"• `{name}`: {p.description}" for name, p in sorted(self.presets.items())]
            return "Presets (`/persona use NAME`):\n" + "\n".join(lines)
        if isinstance(command, PersonaReset):
            await self.personas.reset(scope)
            return "This channel is back to the default persona."
        if isinstance(command, PersonaUse):
            preset = self.presets.get(command.preset.strip().lower())
            if preset is None:
                names = ", ".join(f"`{n}`" for n in sorted(self.presets))
                raise CommandError(f"There is no preset `{command.preset}`. Choose one of {names}.")
            await self.personas.save(scope, preset.stamped(actor.name))
            return f"This channel now uses the `{preset.preset}` persona."
        if isinstance(command, PersonaSet):
            current = await self.personas.get(scope)
            persona = replace(current, system_prompt=command.prompt, preset="", description="")
            await self.personas.save(scope, persona.stamped(actor.name))
            return "Done: this channel's persona now uses your prompt. `/persona show` to check it."
        if isinstance(command, PersonaTuning):
            return await self._tune(command, scope, actor)
        raise CommandError(f"Unknown command.\n\n{HELP}")  # Forget and Invalid are handled in `run`

    async def _tune(self, command: PersonaTuning, scope: ChannelScope, actor: Author) -> str:
        field, value, shown = _setting(command)
        named = command.model if isinstance(command, PersonaModel) else (
            command.models if isinstance(command, PersonaFallback) else None)
        for model in ([named] if isinstance(named, str) else named or ()):
            prefix = unknown_provider(model, self.providers)
            if prefix is not None:
                known = ", ".join(f"`{p}`" for p in sorted(self.providers)) or "none besides Together"
                raise CommandError(f"There is no provider `{prefix}` (providers: {known}).")
        if isinstance(command, PersonaTools) and command.servers not in (None, "off"):
            if self.tools is None or not self.tools.names:
                raise CommandError("No tool servers are configured (MCP_CONFIG): an operator adds them.")
            self.tools.check(command.servers or "")
        current = await self.personas.get(scope)
        changes: dict[str, Any] = {field: value}
        await self.personas.save(scope, replace(current, **changes).stamped(actor.name))
        said = "the default" if value in (None, "") else f"`{shown}`"
        return f"Done: {field} is now {said} in this channel."


def _setting(command: PersonaTuning) -> tuple[str, object, str]:
    """The persona field a tuning command sets, its value (None: the default), and how to show it."""
    if isinstance(command, PersonaModel):
        return "model", command.model, command.model or ""
    if isinstance(command, PersonaTemperature):
        value = command.value
        return "temperature", value, "" if value is None else f"{value:g}"
    if isinstance(command, PersonaMaxTokens):
        return "max_tokens", command.value, str(command.value)
    if isinstance(command, PersonaFallback):
        models = command.models
        return "fallback", models, "" if models is None else (",".join(models) or "off")
    if isinstance(command, PersonaSummary):
        prompt = command.prompt
        return "summary_prompt", prompt or "", "" if prompt is None else _shortened(prompt, 80)
    if isinstance(command, PersonaTools):
        return "tools", command.servers, command.servers or ""
    if isinstance(command, PersonaVision):
        seen = command.on
        return "vision", seen, "" if seen is None else ("on" if seen else "off")
    on = command.on
    return "reasoning", on, "" if on is None else ("on" if on else "off")


def _shortened(text: str, most: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= most else flat[: most - 1] + "…"
