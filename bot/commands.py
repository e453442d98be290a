"""The chat commands every surface understands: `/persona …` and `/forget`.

One parser for Slack, Discord and the console. The surface decides who may
change a persona and passes `can_admin` (plus `who_may`, the words that
tell a refused user who can); everything else is decided here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from bot.history import Conversations
from bot.personas import MAX_PROMPT_CHARS, Persona, PersonaStore
from bot.surface import Author, ChannelScope, ConversationKey

HELP = """**`/persona`** sets how the bot behaves in this channel.
• `/persona show`: the persona in force here
• `/persona list`: the presets
• `/persona use NAME`: switch to a preset
• `/persona set PROMPT`: your own system prompt
• `/persona model NAME|default`, `/persona temperature 0-2|default`, \
`/persona max_tokens N|default`, `/persona reasoning on|off|default`
• `/persona reset`: back to the default
• `/forget`: clear this conversation's memory"""

CHANGES = {"use", "set", "reset", "model", "temperature", "max_tokens", "max-tokens", "reasoning"}


class CommandError(ValueError):
    """A command the user typed wrong; the message says how to type it right."""


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
    if persona.set_by:
        lines.append(f"• set by {persona.set_by}")
    prompt = persona.system_prompt
    if len(prompt) > 600:
        prompt = prompt[:600] + "…"
    lines.append("> " + prompt.replace("\n", "\n> "))
    return "\n".join(lines)


def _parse_temperature(value: str) -> float:
    try:
        temperature = float(value)
    except ValueError:
        raise CommandError(
            "Temperature must be a number from 0 to 2, e.g. `/persona temperature 0.3`."
        ) from None
    if not (0.0 <= temperature <= 2.0) or math.isnan(temperature):
        raise CommandError("Temperature must be from 0 to 2.")
    return temperature


def _parse_max_tokens(value: str, limit: int) -> int:
    try:
        tokens = int(value)
    except ValueError:
        raise CommandError("max_tokens must be a whole number, e.g. `/persona max_tokens 800`.") from None
    if not 1 <= tokens <= limit:
        raise CommandError(f"max_tokens must be from 1 to {limit}.")
    return tokens


class Commands:
    def __init__(
        self,
        personas: PersonaStore,
        conversations: Conversations,
        presets: dict[str, Persona],
        default_model: str,
        max_tokens_limit: int,
    ) -> None:
        self.personas = personas
        self.conversations = conversations
        self.presets = presets
        self.default_model = default_model
        self.max_tokens_limit = max_tokens_limit

    async def run(
        self,
        text: str,
        *,
        scope: ChannelScope,
        conversation: ConversationKey | None,
        actor: Author,
        can_admin: bool,
        who_may: str = "",
    ) -> str:
        """Run one command line; return the Markdown reply for the person who typed it."""
        words = text.strip().lstrip("/").split(maxsplit=1)
        if not words:
            return HELP
        command, rest = words[0].lower(), (words[1] if len(words) > 1 else "")
        if command == "forget":
            return await self._forget(conversation)
        if command != "persona":
            return f"Unknown command `/{command}`.\n\n{HELP}"
        sub_words = rest.strip().split(maxsplit=1)
        sub = sub_words[0].lower() if sub_words else "show"
        arg = sub_words[1].strip() if len(sub_words) > 1 else ""
        if sub in CHANGES and not can_admin:
            who = who_may or "channel admins"
            return f"Sorry, only {who} may change this channel's persona. `/persona show` works for everyone."
        try:
            return await self._persona(sub, arg, scope, actor)
        except CommandError as error:
            return str(error)

    async def _forget(self, conversation: ConversationKey | None) -> str:
        if conversation is None:
            return "Use `/forget` inside a conversation (a thread, a reply chain or a DM)."
        forgot = await self.conversations.forget(conversation)
        return "Done: I have forgotten this conversation." if forgot else "There was nothing to forget here."

    async def _persona(self, sub: str, arg: str, scope: ChannelScope, actor: Author) -> str:
        if sub == "help":
            return HELP
        if sub == "show":
            return describe(await self.personas.get(scope), self.default_model, self.presets)
        if sub == "list":
            lines = [f"• `{name}`: {p.description}" for name, p in sorted(self.presets.items())]
            return "Presets (`/persona use NAME`):\n" + "\n".join(lines)
        if sub == "reset":
            await self.personas.reset(scope)
            return "This channel is back to the default persona."
        if sub == "use":
            preset = self.presets.get(arg.lower())
            if preset is None:
                names = ", ".join(f"`{n}`" for n in sorted(self.presets))
                raise CommandError(f"There is no preset `{arg}`. Choose one of {names}.")
            await self.personas.save(scope, preset.stamped(actor.name))
            return f"This channel now uses the `{preset.preset}` persona."
        if sub == "set":
            if not arg:
                raise CommandError("Give the prompt after `set`, e.g. `/persona set You are a terse SRE.`")
            if len(arg) > MAX_PROMPT_CHARS:
                raise CommandError(
                    f"That prompt is {len(arg):,} characters; the limit is {MAX_PROMPT_CHARS:,}."
                )
            current = await self.personas.get(scope)
            persona = replace(current, system_prompt=arg, preset="", description="")
            await self.personas.save(scope, persona.stamped(actor.name))
            return "Done: this channel's persona now uses your prompt. `/persona show` to check it."
        if sub in ("model", "temperature", "max_tokens", "max-tokens", "reasoning"):
            return await self._tune(sub.replace("-", "_"), arg, scope, actor)
        raise CommandError(f"Unknown `/persona {sub}`.\n\n{HELP}")

    async def _tune(self, field: str, arg: str, scope: ChannelScope, actor: Author) -> str:
        if not arg:
            raise CommandError(f"Give a value, e.g. `/persona {field} default`.")
        value: object = None
        if arg.lower() != "default":
            if field == "model":
                if len(arg) > 200 or any(c.isspace() for c in arg):
                    raise CommandError("A model name has no spaces, e.g. `Qwen/Qwen3.5-9B`.")
                value = arg
            elif field == "temperature":
                value = _parse_temperature(arg)
            elif field == "max_tokens":
                value = _parse_max_tokens(arg, self.max_tokens_limit)
            else:
                if arg.lower() not in ("on", "off"):
                    raise CommandError("Reasoning is `on`, `off` or `default`.")
                value = arg.lower() == "on"
        current = await self.personas.get(scope)
        changes: dict[str, Any] = {field: value}
        await self.personas.save(scope, replace(current, **changes).stamped(actor.name))
        shown = "the default" if value is None else f"`{arg}`"
        return f"Done: {field} is now {shown} in this channel."
