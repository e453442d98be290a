"""Discord attachments end to end: real discord.py, the fake Discord serving attachment URLs, Redis."""

from __future__ import annotations

import pytest

from bot.contract import ConversationKey
from tests.fakes.llm import Answer
from tests.support.discord_fixtures import Rig, fake_discord, llm, rig, world
from tests.support.files import image, image_parts, pdf_with_text, text_of
from tests.support.helpers import wait_until

__all__ = ["fake_discord", "llm", "rig", "world"]  # fixtures used by name

MANAGE_CHANNELS = 1 << 4


async def answered(rig: Rig, count: int) -> None:
    await wait_until(lambda: len(rig.llm.requests) >= count, timeout=10)
    await wait_until(lambda: rig.engine.live_answers == 0, timeout=10)


async def test_text_json_and_pdf_attachments_are_read(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    rig.llm.answer = Answer.of("Read.")
    await fake.user_message(w.general, w.alice, f"{fake.bot.mention} check these", files=[
        ("config.json", b'{"replicas": 3}', "application/json"),
        ("main.py", b"print('hi')\n", "text/x-python"),
        ("guide.pdf", pdf_with_text("Restart the pods"), "application/pdf"),
        ("bundle.zip", b"PK\x03\x04 binary", "application/zip"),
    ])
    await answered(rig, 1)
    asked = rig.llm.requests[0]["messages"][-1]["content"]
    assert asked.startswith('Alice: check these\n\nFile `config.json`:\n```\n{"replicas": 3}\n```')
    assert "File `main.py`:\n```\nprint('hi')\n" in asked
    assert "Restart the pods" in asked
    assert "File `bundle.zip` (application/zip): not read" in asked
    assert len(fake.downloads) == 3  # the zip is named, never downloaded
    shown = fake.bot_text(w.general)
    assert "`bundle.zip` was not read: it is not a text file, a PDF or an image." in shown


async def test_an_image_for_a_vision_persona_and_a_replay_after_a_restart(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    fake.grant(w.guild, w.alice, MANAGE_CHANNELS)
    done = await fake.slash_command(
        w.alice, w.general, "persona", subcommand="vision", options={"mode": "on"}
    )
    assert "vision is now `on`" in await done.answered()
    rig.llm.answer = Answer.of("A red photo.")
    first = await fake.user_message(w.general, w.alice, f"{fake.bot.mention} what is it?", files=[
        ("photo.jpg", image(3000, 2000, "JPEG"), "image/jpeg"),
    ])
    await answered(rig, 1)
    [picture] = image_parts(rig.llm.requests[0]["messages"][-1])
    assert picture.size == (1024, 683) and picture.format == "JPEG"

    # Another process (nothing cached) continues the reply chain: the image is fetched again,
    # through the message (its CDN URL may have expired), not from Redis.
    rig.engine.files.cache = type(rig.engine.files.cache)()
    rig.adapter.files._known.clear()
    answer = fake.bot_messages(w.general)[-1]
    rig.llm.answer = Answer.of("Yes.")
    await fake.user_message(w.general, w.alice, "is it red?", reply_to=answer)
    await answered(rig, 2)
    replayed = rig.llm.requests[1]["messages"][1]
    assert "Image `photo.jpg`" in text_of(replayed)
    assert [p.size for p in image_parts(replayed)] == [(1024, 683)]
    fetched = [c for c in fake.calls if c.method == "GET" and c.message_id == first["id"]]
    assert fetched, "the message was read again for a fresh attachment URL"


@pytest.mark.parametrize(
    ("status", "reason"), [(404, "it was deleted"), (403, "Discord refused the download")]
)
async def test_an_attachment_that_cannot_be_fetched_is_named_and_the_question_answered(
    rig: Rig, status: int, reason: str
) -> None:
    fake, w = rig.fake, rig.world
    rig.llm.answer = Answer.of("Answered anyway.")
    fake.downloads_fail = status
    message = await fake.user_message(w.general, w.alice, f"{fake.bot.mention} why?", files=[
        ("trace.log", b"boom", "text/plain"),
    ])
    await answered(rig, 1)
    assert rig.llm.requests[0]["messages"][-1]["content"].startswith("Alice: why?")
    shown = fake.bot_text(w.general)
    assert shown.startswith("Answered anyway.")
    assert f"`trace.log` was left out: I could not fetch it: {reason}." in shown
    assert fake.downloads == [message["attachments"][0]["id"]]


async def test_history_rebuilt_from_the_reply_chain_reads_its_attachments(rig: Rig) -> None:
    fake, w = rig.fake, rig.world
    rig.llm.answer = Answer.of("Noted.")
    first = await fake.user_message(w.general, w.alice, f"{fake.bot.mention} keep this", files=[
        ("todo.txt", b"buy milk", "text/plain"),
    ])
    await answered(rig, 1)
    key = ConversationKey("discord", w.guild.id, w.general.id, first["id"])
    await rig.engine.redis.delete(rig.engine.keys.history(key))  # Redis lost it (TTL, flush)
    answer = fake.bot_messages(w.general)[-1]
    await fake.user_message(w.general, w.bob, "what was on it?", reply_to=answer)
    await answered(rig, 2)
    rebuilt = rig.llm.requests[1]["messages"][1]["content"]
    assert rebuilt.startswith("Alice: keep this\n\nFile `todo.txt`:\n```\nbuy milk\n```")


async def test_a_file_shared_with_someone_else_in_a_thread_is_context_for_the_next_question(
    rig: Rig,
) -> None:
    """In a thread the bot is part of, Alice shares a log with Bob: no answer, but the bot
    keeps the message with its file, so the next question can be about it."""
    fake, w = rig.fake, rig.world
    starter = await fake.user_message(w.general, w.alice, "incident")
    thread = await fake.create_thread(w.general, w.alice, "incident", starter=starter)
    rig.llm.answer = Answer.of("Sure.")
    await fake.user_message(thread, w.alice, f"{fake.bot.mention} help us debug")
    await answered(rig, 1)
    await fake.user_message(thread, w.alice, f"{w.bob.mention} here is the log", files=[
        ("app.log", b"ERROR disk full on /var\n", "text/plain"),
    ])
    key = ConversationKey("discord", str(thread.guild_id), str(thread.parent_id), thread.id)

    async def kept() -> bool:
        return any(e.attachments for e in await rig.engine.conversations.load(key))

    await wait_until(kept)
    await fake.user_message(thread, w.alice, "what does the log say?")
    await answered(rig, 2)
    assert len(rig.llm.requests) == 2  # the message to Bob was not answered
    context = "\n".join(str(m["content"]) for m in rig.llm.requests[1]["messages"])
    assert "File `app.log`:\n```\nERROR disk full on /var" in context
