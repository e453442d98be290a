"""Summaries on Discord, end to end with discord.py against the fake Discord: Apps → Summarize
on a thread's message or a reply chain (posted there, with jump URLs as sources), and
`/summarize [window]` (the channel's window and its threads', ephemeral)."""

from __future__ import annotations

import time

from adapters.discord.summaries import MENU
from bot.ops import metrics
from tests.fakes.discord_payloads import DISCORD_EPOCH_MS
from tests.fakes.llm import Answer
from tests.support.discord_fixtures import Rig, fake_discord, llm, rig, world
from tests.support.helpers import wait_until
from tests.support.summaries import every_request, model_citing

__all__ = ["fake_discord", "llm", "rig", "world"]  # fixtures used by name


def jump(guild_id: str, channel_id: str, message_id: str) -> str:
    return f"https://discord.com/channels/{guild_id}/{channel_id}/{message_id}"


def counted(kind: str, outcome: str) -> float | None:
    return metrics.current().registry.get_sample_value(
        "chatbot_summaries_total", {"platform": "discord", "kind": kind, "outcome": outcome}
    )


async def test_summarize_on_a_thread_message_summarises_the_thread_in_it(rig: Rig) -> None:
    metrics.reset()
    fake, w = rig.fake, rig.world
    rig.llm.script = model_citing()
    thread = await fake.create_thread(w.general, w.alice, "incident")
    said = [
        await fake.user_message(thread, w.alice if i % 2 else w.bob, f"step-{i} done") for i in range(1, 31)
    ]
    asked = await fake.message_command(w.bob, thread, MENU, said[10])
    assert "Summarizing" in await asked.answered() and asked.ephemeral
    await wait_until(lambda: counted("thread", "ok"), timeout=10)

    assert all(f"step-{i} done" in every_request(rig.llm) for i in range(1, 31))
    (summary,) = fake.bot_messages(thread)
    assert jump(w.guild.id, thread.id, said[0]["id"]) in summary["content"]
    assert jump(w.guild.id, thread.id, said[-1]["id"]) in summary["content"]
    assert fake.bot_messages(w.general) == []  # the thread only


async def test_summarize_on_a_channel_message_reads_its_reply_chain_only(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    rig.llm.script = model_citing()
    root = await fake.user_message(w.general, w.alice, "chain-start: lunch?")
    await fake.user_message(w.general, w.bob, "unrelated chatter")
    reply = await fake.user_message(w.general, w.bob, "chain-reply: pizza", reply_to=root)
    asked = await fake.message_command(w.alice, w.general, MENU, reply)
    await asked.answered()
    await wait_until(lambda: rig.engine.live_answers == 0 and fake.bot_messages(w.general), timeout=10)

    given = every_request(rig.llm)
    assert "chain-start" in given and "chain-reply" in given and "unrelated" not in given
    (summary,) = fake.bot_messages(w.general)
    assert summary["message_reference"]["message_id"] == reply["id"]  # a reply to the message
    assert jump(w.guild.id, w.general.id, root["id"]) in summary["content"]


async def test_slash_summarize_reads_the_window_and_threads_ephemerally(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    rig.llm.script = model_citing()
    old = await fake.user_message(w.general, w.bob, "old-news from the morning")
    # Written three hours ago: its id carries its time, as Discord's snowflakes do.
    w.general.messages.pop(old["id"])
    old["id"] = str(((int(time.time() * 1000) - 3 * 3600 * 1000 - DISCORD_EPOCH_MS) << 22) | 1)
    w.general.messages = {old["id"]: old, **w.general.messages}
    fresh = await fake.user_message(w.general, w.alice, "fresh-topic: ship friday?")
    thread = await fake.create_thread(w.general, w.alice, "shipping")
    await fake.user_message(thread, w.bob, "thread-reply: yes")
    asked = await fake.slash_command(w.alice, w.general, "summarize", options={"window": "2h"})
    await wait_until(lambda: rig.llm.requests and rig.engine.live_answers == 0, timeout=10)

    given = every_request(rig.llm)
    assert "fresh-topic" in given and "thread-reply: yes" in given and "old-news" not in given
    assert asked.ephemeral and asked.deferred
    assert jump(w.guild.id, w.general.id, fresh["id"]) in asked.text
    assert fake.bot_messages(w.general) == []  # never posted in the channel


async def test_slash_summarize_explains_a_window_it_does_not_know(rig: Rig) -> None:
    w = rig.world
    asked = await rig.fake.slash_command(w.alice, w.general, "summarize", options={"window": "soon"})
    assert "`2h`, `24h` (the default), `7d` or `since monday`" in await asked.answered()
    assert asked.ephemeral and rig.llm.requests == []


async def test_slash_summarize_of_an_empty_window_says_so(rig: Rig) -> None:
    asked = await rig.fake.slash_command(rig.world.alice, rig.world.general, "summarize")
    await wait_until(lambda: "no messages" in asked.text, timeout=10)
    assert asked.text == "There are no messages to summarise in the last 24 hours."
    assert rig.llm.requests == []


async def test_stop_on_a_thread_summary(rig: Rig) -> None:
    metrics.reset()
    fake, w = rig.fake, rig.world
    rig.llm.answer = Answer.words(400, tokens_per_second=40)
    thread = await fake.create_thread(w.general, w.alice, "long")
    first = await fake.user_message(thread, w.alice, "a question worth summarising")
    await fake.message_command(w.alice, thread, MENU, first)
    await wait_until(lambda: any(
        c.get("custom_id", "").startswith("chatbot:stop:")
        for m in fake.bot_messages(thread) for row in m.get("components") or [] for c in row["components"]
    ), timeout=10)
    message = fake.bot_messages(thread)[0]
    stop_id = next(c["custom_id"] for row in message["components"] for c in row["components"])
    await fake.press_button(w.alice, thread, message, stop_id)
    await wait_until(lambda: counted("thread", "stopped"), timeout=10)
    assert fake.bot_text(thread).endswith("_(stopped)_") and "w400" not in fake.bot_text(thread)
