"""The chat commands as values: `/persona …` and `/forget`, and the limits on their arguments.

The core defines them once; every surface builds them its own way and hands
them to `Core.command`: Slack and the console from typed text (`parse`),
Discord from its typed slash options (whose `max_length`, `min_value` and
`max_value` come from `CommandLimits`, so the UI refuses what the core would).

A line that does not parse is still a command (`Invalid`): the core answers it
with the right words, after the admin check when it meant a change, so a person
who may not change a persona is told so before being told how to type it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

MAX_PROMPT_CHARS = 4000  # a persona's system prompt
MIN_TEMPERATURE = 0.0
MAX_TEMPERATURE = 2.0
MAX_MODEL_CHARS = 200  # a model name
MAX_FALLBACKS = 5  # models in a persona's own fallback chain


@dataclass(frozen=True)
class CommandLimits:
    """What the core accepts as command arguments; UIs advertise these, the core enforces them.

    `max_tokens` depends on the model settings (half the context window), hence a
    value the core hands out (`Core.command_limits`) rather than a constant.
    """

    max_tokens: int
    max_prompt_chars: int = MAX_PROMPT_CHARS
    min_temperature: float = MIN_TEMPERATURE
    max_temperature: float = MAX_TEMPERATURE
    max_model_chars: int = MAX_MODEL_CHARS


class CommandError(ValueError):
    """A command typed wrong; the message says how to type it right."""


@dataclass(frozen=True)
class PersonaShow:
    changes: ClassVar[bool] = False


@dataclass(frozen=True)
class PersonaList:
    changes: ClassVar[bool] = False


@dataclass(frozen=True)
class PersonaHelp:
    changes: ClassVar[bool] = False


@dataclass(frozen=True)
class PersonaReset:
    changes: ClassVar[bool] = True


@dataclass(frozen=True)
class PersonaUse:
    preset: str
    changes: ClassVar[bool] = True


@dataclass(frozen=True)
class PersonaSet:
    prompt: str
    changes: ClassVar[bool] = True


@dataclass(frozen=True)
class PersonaModel:
    model: str | None  # None: back to the default
    changes: ClassVar[bool] = True


@dataclass(frozen=True)
class PersonaTemperature:
    value: float | None
    changes: ClassVar[bool] = True


@dataclass(frozen=True)
class PersonaMaxTokens:
    value: int | None
    changes: ClassVar[bool] = True


@dataclass(frozen=True)
class PersonaReasoning:
    on: bool | None
    changes: ClassVar[bool] = True


@dataclass(frozen=True)
class PersonaVision:
    """Whether the channel's model takes images (`/persona vision on|off|default`)."""

    on: bool | None
    changes: ClassVar[bool] = True


@dataclass(frozen=True)
class PersonaFallback:
    """The models tried when the channel's model cannot answer (`/persona fallback A,B | off | default`)."""

    models: tuple[str, ...] | None  # () = off: no fallback; None: back to BOT_FALLBACK_MODELS
    changes: ClassVar[bool] = True


@dataclass(frozen=True)
class PersonaSummary:
    """What summaries in this channel should do besides the persona's prompt (`/persona summary
    PROMPT | default`): a language, a format, what to look for."""

    prompt: str | None  # None: back to none
    changes: ClassVar[bool] = True


@dataclass(frozen=True)
class PersonaTools:
    """The MCP servers the channel's persona may use (`/persona tools A,B | all | off | default`);
    only servers the operator configured (MCP_CONFIG), never one a channel names into being."""

    servers: str | None  # "off", "all" or "a,b"; None: back to BOT_TOOLS
    changes: ClassVar[bool] = True


@dataclass(frozen=True)
class Forget:
    """Forget the conversation the command was given in (`/forget`)."""

    changes: ClassVar[bool] = False


@dataclass(frozen=True)
class Invalid:
    """A line that is not a valid command; `message` says why (and how to type it)."""

    message: str
    meant_change: bool = False  # it named a persona change: the admin check comes first
    with_help: bool = False  # an unknown command: the reply lists the commands too

    @property
    def changes(self) -> bool:
        return self.meant_change


PersonaTuning = (
    PersonaModel | PersonaTemperature | PersonaMaxTokens | PersonaReasoning | PersonaVision | PersonaFallback
    | PersonaSummary | PersonaTools
)
Command = (
    PersonaShow | PersonaList | PersonaHelp | PersonaReset | PersonaUse | PersonaSet | PersonaTuning
    | Forget | Invalid
)

# Words that name a persona change, typed right or not (see `Invalid.meant_change`).
CHANGES = frozenset({
    "use", "set", "reset", "model", "temperature", "max_tokens", "max-tokens", "reasoning", "vision",
    "fallback", "summary", "tools",
})


def check(command: Command, limits: CommandLimits) -> None:
    """Raise `CommandError` when an argument is outside `limits`: whoever built the command."""
    if isinstance(command, PersonaSet):
        if not command.prompt:
            raise CommandError("Give the prompt after `set`, e.g. `/persona set You are a terse SRE.`")
        if len(command.prompt) > limits.max_prompt_chars:
            size, most = len(command.prompt), limits.max_prompt_chars
            raise CommandError(f"That prompt is {size:,} characters; the limit is {most:,}.")
    elif isinstance(command, PersonaSummary) and command.prompt is not None:
        if len(command.prompt) > limits.max_prompt_chars:
            size, most = len(command.prompt), limits.max_prompt_chars
            raise CommandError(f"That summary prompt is {size:,} characters; the limit is {most:,}.")
    elif isinstance(command, PersonaModel) and command.model is not None:
        model = command.model
        if not model:
            raise CommandError("Give a value, e.g. `/persona model default`.")
        if len(model) > limits.max_model_chars or any(c.isspace() for c in model):
            raise CommandError("A model name has no spaces, e.g. `Qwen/Qwen3.5-9B`.")
    elif isinstance(command, PersonaFallback) and command.models:
        if len(command.models) > MAX_FALLBACKS:
            raise CommandError(f"A fallback chain has at most {MAX_FALLBACKS} models.")
        if any(len(m) > limits.max_model_chars or any(c.isspace() for c in m) for m in command.models):
            raise CommandError("Model names have no spaces: `/persona fallback model-a,provider:model-b`.")
    elif isinstance(command, PersonaTemperature) and command.value is not None:
        value = command.value
        if math.isnan(value) or not limits.min_temperature <= value <= limits.max_temperature:
            low, high = limits.min_temperature, limits.max_temperature
            raise CommandError(f"Temperature must be from {low:g} to {high:g}.")
    elif (
        isinstance(command, PersonaMaxTokens) and command.value is not None
        and not 1 <= command.value <= limits.max_tokens
    ):
        raise CommandError(f"max_tokens must be from 1 to {limits.max_tokens}.")


def parse(text: str) -> Command:
    """One typed line (`/persona temperature 0.3`, `persona show`, `/forget`) as a command.

    Shape only: whether a value is within the limits is `check`'s job, the same for
    commands built from Discord's options.
    """
    words = text.strip().lstrip("/").split(maxsplit=1)
    if not words:
        return PersonaHelp()
    name, rest = words[0].lower(), (words[1] if len(words) > 1 else "")
    if name == "forget":
        return Forget()
    if name != "persona":
        return Invalid(f"Unknown command `/{name}`.", with_help=True)
    sub_words = rest.strip().split(maxsplit=1)
    sub = sub_words[0].lower() if sub_words else "show"
    arg = sub_words[1].strip() if len(sub_words) > 1 else ""
    if sub not in CHANGES and sub not in ("show", "list", "help"):
        return Invalid(f"Unknown `/persona {sub}`.", with_help=True)
    try:
        return _persona(sub, arg)
    except CommandError as error:
        return Invalid(str(error), meant_change=sub in CHANGES)


def _persona(sub: str, arg: str) -> Command:
    simple: dict[str, Command] = {
        "show": PersonaShow(), "list": PersonaList(), "help": PersonaHelp(), "reset": PersonaReset(),
    }
    if sub in simple:
        return simple[sub]
    if sub == "use":
        return PersonaUse(arg)
    if sub == "set":
        return PersonaSet(arg)
    field = sub.replace("-", "_")
    if not arg:
        raise CommandError(f"Give a value, e.g. `/persona {field} default`.")
    default = arg.lower() == "default"
    if field == "model":
        if any(c.isspace() for c in arg):
            raise CommandError("A model name has no spaces, e.g. `Qwen/Qwen3.5-9B`.")
        return PersonaModel(None if default else arg)
    if field == "summary":
        return PersonaSummary(None if default else arg)
    if field == "fallback":
        if arg.lower() == "off":
            return PersonaFallback(())
        models = tuple(m.strip() for m in arg.split(","))
        if not all(models) or any(c.isspace() for m in models for c in m):
            raise CommandError(
                "Give the models comma separated, e.g. `/persona fallback model-a,provider:model-b`, "
                "or `off`, or `default`."
            )
        return PersonaFallback(None if default else tuple(dict.fromkeys(models)))
    if field == "tools":
        choice = arg.lower().replace(" ", "")
        if choice in ("off", "all", "default"):
            return PersonaTools(None if default else choice)
        names = tuple(dict.fromkeys(n for n in choice.split(",")))
        if not all(names):
            raise CommandError("Give the servers comma separated, e.g. `/persona tools orders,status`, "
                               "or `all`, `off` or `default`.")
        return PersonaTools(",".join(names))
    if field == "temperature":
        return PersonaTemperature(None if default else _temperature(arg))
    if field == "max_tokens":
        return PersonaMaxTokens(None if default else _whole(arg))
    if field == "vision":
        if not default and arg.lower() not in ("on", "off"):
            raise CommandError("Vision is `on`, `off` or `default`.")
        return PersonaVision(None if default else arg.lower() == "on")
    if default:
        return PersonaReasoning(None)
    if arg.lower() not in ("on", "off"):
        raise CommandError("Reasoning is `on`, `off` or `default`.")
    return PersonaReasoning(arg.lower() == "on")


def _temperature(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise CommandError(
            "Temperature must be a number from 0 to 2, e.g. `/persona temperature 0.3`."
        ) from None


def _whole(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise CommandError("max_tokens must be a whole number, e.g. `/persona max_tokens 800`.") from None
