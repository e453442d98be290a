"""The contract between the core and the platforms: typed commands, their limits, one claim key."""

from __future__ import annotations

from typing import Any

import discord
import pytest
from discord import app_commands

from adapters.discord.commands import build_commands
from adapters.slack.commands import Commands as SlackCommands
from adapters.slack.intake import Incoming
from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.contract import Author, ChannelScope, ConversationKey, Sender, parse
from bot.contract.commands import (
    MAX_PROMPT_CHARS,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    Command,
    CommandLimits,
    Forget,
    Invalid,
    PersonaHelp,
    PersonaList,
    PersonaMaxTokens,
    PersonaModel,
    PersonaReasoning,
    PersonaReset,
    PersonaSet,
    PersonaShow,
    PersonaTemperature,
    PersonaUse,
)
from bot.engine import Engine
from tests.support.discord_fixtures import Rig, fake_discord, llm, rig, world

__all__ = ["fake_discord", "llm", "rig", "world"]  # fixtures used by name

LIMITS = CommandLimits(max_tokens=4096)

# What a person types (Slack, the console), and the object the core gets for it.
TYPED: list[tuple[str, Command]] = [
    ("persona show", PersonaShow()),
    ("persona", PersonaShow()),
    ("/persona list", PersonaList()),
    ("persona help", PersonaHelp()),
    ("", PersonaHelp()),
    ("persona use pirate", PersonaUse("pirate")),
    ("persona set You are a terse SRE.", PersonaSet("You are a terse SRE.")),
    ("persona model Qwen/Qwen3.5-9B", PersonaModel("Qwen/Qwen3.5-9B")),
    ("persona model default", PersonaModel(None)),
    ("persona temperature 0.3", PersonaTemperature(0.3)),
    ("persona temperature default", PersonaTemperature(None)),
    ("persona max_tokens 800", PersonaMaxTokens(800)),
    ("persona max-tokens 800", PersonaMaxTokens(800)),
    ("persona max_tokens default", PersonaMaxTokens(None)),
    ("persona reasoning on", PersonaReasoning(True)),
    ("persona reasoning off", PersonaReasoning(False)),
    ("persona reasoning default", PersonaReasoning(None)),
    ("persona reset", PersonaReset()),
    ("/forget", Forget()),
]


@pytest.mark.parametrize(("text", "command"), TYPED)
def test_the_parser_builds_the_command_objects(text: str, command: Command) -> None:
    assert parse(text) == command


@pytest.mark.parametrize(
    ("text", "changes", "with_help"),
    [
        ("persona temperature warm", True, False),  # a change typed wrong: admins only hear how
        ("persona max_tokens", True, False),
        ("persona reasoning maybe", True, False),
        ("persona fly", False, True),
        ("dance", False, True),
    ],
)
def test_a_line_that_does_not_parse_is_an_invalid_command(text: str, changes: bool, with_help: bool) -> None:
    command = parse(text)
    assert isinstance(command, Invalid)
    assert (command.changes, command.with_help) == (changes, with_help)


class Recorded:
    """A `Core` that records the command objects a surface hands it."""

    def __init__(self) -> None:
        self.commands: list[Command | str] = []

    async def command(self, command: Command | str, **_: Any) -> str:
        self.commands.append(command)
        return "ok"

    def listed_persona_admin(self, user_id: str) -> bool:
        return True


class NoPeople:
    async def name(self, user_id: str) -> str:
        return "Alice"

    async def is_admin(self, user_id: str) -> bool:
        return True


Tree = app_commands.CommandTree[discord.Client]


def discord_commands(limits: CommandLimits = LIMITS) -> tuple[Tree, list[Command]]:
    """The slash commands the Discord adapter registers, with what each hands the core."""
    built: list[Command] = []

    async def run(interaction: Any, command: Command, target: Any) -> None:
        built.append(command)

    tree: Tree = app_commands.CommandTree(
        discord.Client(intents=discord.Intents.none())
    )
    build_commands(tree, run, lambda: ["pirate"], limits)
    return tree, built


def persona_subcommand(tree: Tree, name: str) -> app_commands.Command[Any, ..., Any]:
    group = tree.get_command("persona")
    assert isinstance(group, app_commands.Group)
    command = group.get_command(name)
    assert isinstance(command, app_commands.Command)
    return command


# The same commands as Discord's options give them: subcommand, options.
OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("show", {}, "persona show"),
    ("list", {}, "persona list"),
    ("use", {"preset": "pirate"}, "persona use pirate"),
    ("set", {"prompt": "You are a terse SRE."}, "persona set You are a terse SRE."),
    ("model", {"name": "Qwen/Qwen3.5-9B"}, "persona model Qwen/Qwen3.5-9B"),
    ("model", {"name": "default"}, "persona model default"),
    ("temperature", {"value": 0.3}, "persona temperature 0.3"),
    ("temperature", {}, "persona temperature default"),
    ("max_tokens", {"value": 800}, "persona max_tokens 800"),
    ("max_tokens", {}, "persona max_tokens default"),
    ("reasoning", {"mode": "on"}, "persona reasoning on"),
    ("reasoning", {"mode": "off"}, "persona reasoning off"),
    ("reasoning", {"mode": "default"}, "persona reasoning default"),
    ("reset", {}, "persona reset"),
]


@pytest.mark.parametrize(("subcommand", "options", "typed"), OPTIONS)
async def test_slack_and_discord_hand_the_core_the_same_command(
    subcommand: str, options: dict[str, Any], typed: str
) -> None:
    tree, built = discord_commands()
    await persona_subcommand(tree, subcommand).callback(object(), **options)  # type: ignore[arg-type]

    core = Recorded()
    slack = SlackCommands(core, None, NoPeople(), frozenset())  # type: ignore[arg-type]
    payload = {"text": typed.removeprefix("persona "), "user_id": "U1", "team_id": "T", "channel_id": "C"}
    await slack.persona(payload)

    assert built == core.commands == [parse(typed)]


async def test_forget_is_one_object_everywhere() -> None:
    tree, built = discord_commands()
    forget = tree.get_command("forget")
    assert isinstance(forget, app_commands.Command)
    await forget.callback(object())  # type: ignore[arg-type]
    core = Recorded()
    slack = SlackCommands(core, None, NoPeople(), frozenset())  # type: ignore[arg-type]
    await slack.forget(ConversationKey("slack", "T", "C", "1.0"), "U1")
    assert built == core.commands == [Forget()] == [parse("/forget")]


def test_discord_advertises_the_core_limits() -> None:
    limits = CommandLimits(max_tokens=12_345)
    tree, _ = discord_commands(limits)

    def option(subcommand: str) -> app_commands.Parameter:
        (parameter,) = persona_subcommand(tree, subcommand).parameters
        return parameter

    assert (option("set").min_value, option("set").max_value) == (1, MAX_PROMPT_CHARS)
    assert option("model").max_value == limits.max_model_chars
    assert (option("temperature").min_value, option("temperature").max_value) == (
        MIN_TEMPERATURE, MAX_TEMPERATURE,
    )
    assert (option("max_tokens").min_value, option("max_tokens").max_value) == (1, 12_345)


async def test_the_registered_options_are_the_engines_limits(rig: Rig) -> None:
    """The disagreement of old (Discord: a 6,000-character prompt, max_tokens to 1,000,000) is gone."""
    limits = rig.engine.command_limits
    assert limits.max_tokens == rig.settings.model.context_tokens // 2
    assert limits.max_prompt_chars == MAX_PROMPT_CHARS
    (persona,) = [c for c in rig.fake.commands[None] if c["name"] == "persona"]
    options = {o["name"]: o["options"] for o in persona["options"]}
    (prompt,) = options["set"]
    assert prompt["max_length"] == limits.max_prompt_chars
    (tokens,) = options["max_tokens"]
    assert (tokens["min_value"], tokens["max_value"]) == (1, limits.max_tokens)


async def test_the_core_checks_typed_commands_against_its_limits(engine: Engine) -> None:
    """A command object built by any surface is held to the same limits as a typed line."""
    scope = ChannelScope("test", "W1", "C1")

    async def run(command: Command) -> str:
        return await engine.command(command, scope=scope, conversation=None, actor=Author("U1", "A"),
                                    can_admin=True)

    most = engine.command_limits.max_tokens
    assert f"max_tokens must be from 1 to {most}" in await run(PersonaMaxTokens(most + 1))
    assert "Temperature must be from 0 to 2" in await run(PersonaTemperature(2.5))
    assert "the limit is 4,000" in await run(PersonaSet("x" * (MAX_PROMPT_CHARS + 1)))
    assert "no spaces" in await run(PersonaModel("two words"))
    assert "max_tokens is now `800`" in await run(PersonaMaxTokens(800))


async def test_one_claim_key_per_platform_and_event(engine: Engine) -> None:
    """Every call site claims `(platform, event id)`; the key is built once, in the core."""
    assert await engine.claim("slack", "T1:C1:1700000000.000100")
    assert not await engine.claim("slack", "T1:C1:1700000000.000100")
    assert await engine.claim("discord", "1700000000000100")  # another platform: another event
    prefix = engine.settings.redis_prefix
    assert await engine.redis.exists(f"{prefix}:seen:slack:T1:C1:1700000000.000100")
    assert await engine.redis.exists(f"{prefix}:seen:discord:1700000000000100")
    # The process's own memory (all the dedup there is while Redis is down) uses the same key.
    await engine.redis.delete(f"{prefix}:seen:discord:1700000000000100")
    assert not await engine.claim("discord", "1700000000000100")


def test_a_slack_message_is_claimed_by_team_channel_and_ts() -> None:
    event = {"channel": "C1", "user": "U1", "ts": "1.5", "text": "hi"}
    assert Incoming.parse(event, "T1", 0.0).event_id == "T1:C1:1.5"



@pytest.mark.parametrize("allowed", [False, True])
async def test_the_core_decides_whose_messages_are_heeded(engine_env: dict[str, str], allowed: bool) -> None:
    """Adapters only say who wrote a message; the core never heeds its own echoes nor the
    platform's notices, and other bots only where that platform's setting allows them."""
    env = engine_env | {"SLACK_ALLOW_BOTS": "true" if allowed else ""}
    async with open_engine(load_settings(env, dotenv=False)) as engine:
        check_heeds(engine, allowed)


def check_heeds(engine: Engine, allowed: bool) -> None:
    assert engine.heeds("slack", Sender.PERSON) and engine.heeds("discord", Sender.PERSON)
    for platform in ("slack", "discord", "console"):
        assert not engine.heeds(platform, Sender.ME)
        assert not engine.heeds(platform, Sender.SYSTEM)
    assert engine.heeds("slack", Sender.BOT) is allowed
    assert not engine.heeds("discord", Sender.BOT)  # DISCORD_ALLOW_BOTS is its own setting
