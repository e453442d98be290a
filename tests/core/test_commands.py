"""`/persona` and `/forget`: one parser for every surface, with validation."""

from __future__ import annotations

import pytest

from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.engine import Engine
from tests.support.core import ALICE, conversation

SCOPE = conversation().channel_scope


async def run(engine: Engine, text: str, can_admin: bool = True) -> str:
    return await engine.command(text, scope=SCOPE, conversation=conversation(), actor=ALICE,
                                can_admin=can_admin, who_may="admins")


async def test_show_list_help(engine: Engine) -> None:
    assert "the default persona (preset `assistant`)" in await run(engine, "persona show")
    listing = await run(engine, "/persona list")
    for name in ("assistant", "concise", "reviewer", "translator", "pirate"):
        assert f"`{name}`" in listing
    assert "/persona use NAME" in await run(engine, "persona help")
    assert "the default persona (preset `assistant`)" in await run(engine, "persona")


async def test_set_show_reset(engine: Engine) -> None:
    await run(engine, "persona set You are a terse SRE.")
    shown = await run(engine, "persona show")
    assert "terse SRE" in shown and "set by Alice" in shown
    await run(engine, "persona reset")
    assert "the default persona (preset `assistant`)" in await run(engine, "persona show")


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("persona use nope", "There is no preset `nope`"),
        ("persona temperature 3", "from 0 to 2"),
        ("persona temperature hot", "must be a number"),
        ("persona max_tokens -5", "from 1 to"),
        ("persona reasoning maybe", "`on`, `off` or `default`"),
        ("persona model has spaces", "no spaces"),
        ("persona set", "Give the prompt"),
        ("persona set " + "x" * 5000, "the limit is 4,000"),
        ("persona dance", "Unknown `/persona dance`"),
        ("dance", "Unknown command `/dance`"),
    ],
)
async def test_bad_input_gets_a_helpful_message(engine: Engine, command: str, words: str) -> None:
    assert words in await run(engine, command)
    assert "the default persona (preset `assistant`)" in await run(engine, "persona show")  # nothing changed


async def test_tuning_and_default(engine: Engine) -> None:
    await run(engine, "persona temperature 0.4")
    await run(engine, "persona max-tokens 500")
    shown = await run(engine, "persona show")
    assert "temperature: 0.4" in shown and "max_tokens: 500" in shown
    await run(engine, "persona temperature default")
    assert "temperature" not in await run(engine, "persona show")


async def test_changes_need_permission_but_show_does_not(engine: Engine) -> None:
    for command in ("persona use pirate", "persona reset", "persona temperature 1"):
        assert "only admins may" in await run(engine, command, can_admin=False)
    assert "the default persona (preset `assistant`)" in await run(engine, "persona show", can_admin=False)


async def test_forget_outside_a_conversation(engine: Engine) -> None:
    reply = await engine.command("forget", scope=SCOPE, conversation=None, actor=ALICE, can_admin=True)
    assert "inside a conversation" in reply


async def test_persona_admins_and_open_apply_on_every_surface(engine_env: dict[str, str]) -> None:
    async with open_engine(load_settings(engine_env | {"PERSONA_ADMINS": "U1"}, dotenv=False)) as listed:
        assert "now uses" in await run(listed, "persona use pirate", can_admin=False)  # Alice is U1
    async with open_engine(load_settings(engine_env | {"PERSONA_OPEN": "true"}, dotenv=False)) as open_:
        assert "now uses" in await run(open_, "persona use concise", can_admin=False)


async def test_show_and_list_name_the_default_preset_alike(engine: Engine) -> None:
    listed = await run(engine, "persona list")
    assert "`assistant`: A helpful general assistant (the default)" in listed
    assert "preset `assistant`" in await run(engine, "persona show")
