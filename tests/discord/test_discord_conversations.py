"""End to end: which Discord messages start and continue a conversation, and what the model sees.

Real discord.py against the fake Discord, the real core on Redis, the fake model.
"""

from __future__ import annotations

import redis.asyncio as redis

from bot.contract import ConversationKey
from tests.fakes.discord_payloads import CHANNEL_PINNED_MESSAGE, Channel
from tests.fakes.llm import Answer
from tests.support.discord_fixtures import Rig, fake_discord, llm, rig, world
from tests.support.helpers import wait_until

__all__ = ["fake_discord", "llm", "rig", "world"]  # fixtures used by name

NAMES_NOTE_START = "\n\nMessages from people"


def turns(rig: Rig, index: int = -1) -> list[tuple[str, str]]:
    """(role, content) of a model request, without the system prompt."""
    return [(m["role"], m["content"]) for m in rig.llm.requests[index]["messages"][1:]]


async def answered(rig: Rig, channel: Channel, count: int) -> None:
    """Wait until `count` answers have their final text (the model ran and the bot wrote it)."""
    await wait_until(lambda: len(rig.llm.requests) >= count, timeout=10)
    await wait_until(lambda: rig.engine.live_answers == 0, timeout=10)


async def test_mention_in_a_channel_gets_a_reply(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    rig.llm.answer = Answer.of("Rotate it with `vault rotate`.")
    asked = await fake.user_message(w.general, w.alice, f"{fake.bot.mention} how do I rotate a key?")
    await answered(rig, w.general, 1)

    (reply,) = fake.bot_messages(w.general)
    assert reply["content"] == "Rotate it with `vault rotate`."
    assert reply["message_reference"]["message_id"] == asked["id"]
    assert turns(rig) == [("user", "Alice: how do I rotate a key?")]


async def test_reply_to_the_bot_continues_with_history(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    rig.llm.answer = Answer.of("First answer.")
    await fake.user_message(w.general, w.alice, f"{fake.bot.mention} first question")
    await answered(rig, w.general, 1)
    first_answer = fake.bot_messages(w.general)[0]

    rig.llm.answer = Answer.of("Second answer.")
    await fake.user_message(w.general, w.bob, "and a follow-up", reply_to=first_answer)
    await answered(rig, w.general, 2)

    assert turns(rig) == [
        ("user", "Alice: first question"),
        ("assistant", "First answer."),
        ("user", "Bob: and a follow-up"),
    ]
    second = fake.bot_messages(w.general)[1]
    assert second["content"] == "Second answer."


async def test_unrelated_messages_and_pings_are_ignored(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    role = fake.add_role(w.guild, "oncall")
    other_bot = fake.add_user("otherbot", guild=w.guild, bot=True)
    await fake.user_message(w.general, w.alice, "just chatting")
    await fake.user_message(w.general, w.alice, "@everyone look", mention_everyone=True)
    await fake.user_message(w.general, w.alice, f"<@&{role}> look")
    await fake.user_message(w.general, other_bot, f"{fake.bot.mention} hello from a bot")
    await fake.user_message(w.general, w.alice, "pinned", message_type=CHANNEL_PINNED_MESSAGE)
    # A message that is answered, sent last: once it is, the earlier ones were all seen.
    await fake.user_message(w.general, w.bob, f"{fake.bot.mention} only me")
    await answered(rig, w.general, 1)

    assert len(rig.llm.requests) == 1
    assert turns(rig) == [("user", "Bob: only me")]


async def test_thread_follow_up_without_mention(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    starter = await fake.user_message(w.general, w.alice, "let's discuss")
    thread = await fake.create_thread(w.general, w.alice, "discussion", starter=starter)
    rig.llm.answer = Answer.of("Sure.")
    await fake.user_message(thread, w.alice, f"{fake.bot.mention} can you help?")
    await answered(rig, thread, 1)

    await fake.user_message(thread, w.alice, f"{w.bob.mention} what do you think?")

    async def noted() -> bool:
        key = ConversationKey("discord", str(thread.guild_id), str(thread.parent_id), thread.id)
        history = await rig.engine.conversations.load(key)
        return history[-1].content == "@Bob what do you think?"

    await wait_until(noted)
    rig.llm.answer = Answer.of("Here is more.")
    await fake.user_message(thread, w.alice, "tell me more")
    await answered(rig, thread, 2)

    assert len(rig.llm.requests) == 2  # the message to Bob was not answered…
    assert turns(rig)[-2:] == [  # …but it is context for the next answer
        ("user", "Alice: @Bob what do you think?"), ("user", "Alice: tell me more")
    ]
    assert ("assistant", "Sure.") in turns(rig)
    assert [m["content"] for m in fake.bot_messages(thread)] == ["Sure.", "Here is more."]
    # The thread's first question was rebuilt with the message the thread was opened on.
    assert turns(rig, 0) == [("user", "Alice: let's discuss"), ("user", "Alice: can you help?")]


async def test_dm_is_one_rolling_conversation(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    dm = fake.dm_channel(w.alice)
    rig.llm.answer = Answer.of("Hello Alice.")
    await fake.user_message(dm, w.alice, "hi")
    await answered(rig, dm, 1)
    rig.llm.answer = Answer.of("You said hi.")
    await fake.user_message(dm, w.alice, "what did I say?")
    await answered(rig, dm, 2)

    assert turns(rig) == [
        ("user", "Alice: hi"),
        ("assistant", "Hello Alice."),
        ("user", "Alice: what did I say?"),
    ]
    assert [m["content"] for m in fake.bot_messages(dm)] == ["Hello Alice.", "You said hi."]


async def test_history_rebuilt_from_the_reply_chain_after_a_flush(
    rig: Rig, redis_client: redis.Redis, redis_prefix: str
) -> None:
    fake, w = rig.fake, rig.world
    rig.llm.answer = Answer.of("One.")
    await fake.user_message(w.general, w.alice, f"{fake.bot.mention} count with me")
    await answered(rig, w.general, 1)
    rig.llm.answer = Answer.of("Two.")
    await fake.user_message(w.general, w.bob, "next", reply_to=fake.bot_messages(w.general)[0])
    await answered(rig, w.general, 2)

    keys = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}:*")]
    assert keys
    await redis_client.delete(*keys)
    rig.adapter.router.roots.clear()  # as after a restart: nothing known in memory either

    rig.llm.answer = Answer.of("Three.")
    await fake.user_message(w.general, w.alice, "and then?", reply_to=fake.bot_messages(w.general)[1])
    await answered(rig, w.general, 3)

    assert turns(rig) == [
        ("user", "Alice: count with me"),
        ("assistant", "One."),
        ("user", "Bob: next"),
        ("assistant", "Two."),
        ("user", "Alice: and then?"),
    ]
    assert rig.llm.requests[-1]["messages"][0]["role"] == "system"
    assert fake.bot_messages(w.general)[2]["content"] == "Three."
