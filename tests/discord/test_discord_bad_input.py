"""Malformed gateway events, empty and oversized messages: refused or ignored, and the bot keeps serving."""

from __future__ import annotations

import pytest

from tests.fakes.llm import Answer
from tests.support.discord_fixtures import Rig, fake_discord, llm, rig, world
from tests.support.helpers import wait_until

__all__ = ["fake_discord", "llm", "rig", "world"]  # fixtures used by name


async def test_an_unknown_event_is_ignored(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    dm = fake.dm_channel(w.alice)
    await fake.dispatch("NOT_AN_EVENT", {"id": "2"})
    rig.llm.answer = Answer.of("Still here.")
    await fake.user_message(dm, w.alice, "are you alive?")
    await wait_until(lambda: [m["content"] for m in fake.bot_messages(dm)] == ["Still here."], timeout=10)
    assert len(fake.identifies) == 1  # the connection never dropped


async def test_an_event_discord_py_cannot_parse_is_dropped_and_the_shard_stays(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """discord.py would end the shard's reader (and the sharded client) on a payload it cannot
    parse; the adapter drops that one event, logged, and keeps the connection."""
    fake, w = rig.fake, rig.world
    dm = fake.dm_channel(w.alice)
    await fake.dispatch("MESSAGE_CREATE", {"id": "1", "channel_id": dm.id})  # no type, author, content
    await wait_until(lambda: "could not parse" in caplog.text, timeout=10)
    assert len(fake.identifies) == 1 and rig.adapter.connected
    rig.llm.answer = Answer.of("Still here.")
    await fake.user_message(dm, w.alice, "are you alive?")
    await wait_until(lambda: [m["content"] for m in fake.bot_messages(dm)] == ["Still here."], timeout=10)
    assert len(rig.llm.requests) == 1


async def test_huge_and_empty_messages_get_clear_replies_and_no_model_call(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    await fake.user_message(w.general, w.alice, f"{fake.bot.mention} " + "lorem ipsum " * 1000)
    await fake.user_message(w.general, w.bob, fake.bot.mention)
    await wait_until(lambda: len(fake.bot_messages(w.general)) == 2, timeout=10)
    replies = sorted(m["content"] for m in fake.bot_messages(w.general))
    assert "11,999 characters long; I can take up to 8,000" in replies[1]
    assert "Ask me something" in replies[0]
    assert rig.llm.requests == []
