"""Files shared on Slack, end to end: real slack-bolt, the fake Slack serving files, fake model, Redis."""

from __future__ import annotations

import json

import redis.asyncio as redis

from bot.contract import ConversationKey
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack import FakeSlack
from tests.support.files import image, image_parts, pdf_with_text, text_of
from tests.support.helpers import wait_until
from tests.support.slack_fixtures import ADMIN, ALICE, BOB, BOT, SlackRig, slack_rig


async def test_text_csv_and_pdf_files_are_read_into_the_question(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("Read them.")
    async with slack_rig(base_env, fake_llm) as rig:
        log = rig.fake.add_file("app.log", b"ERROR disk full\nWARN retrying\n", "text/plain")
        csv = rig.fake.add_file("data.csv", b"name,count\nkeys,3\n", "text/csv")
        pdf = rig.fake.add_file("spec.pdf", pdf_with_text("Rotate keys every 90 days"), "application/pdf")
        message = rig.fake.user_message("C1", ALICE.id, f"<@{BOT}> what is wrong?", files=[log, csv, pdf])
        for event in rig.fake.events_for(message):
            await rig.deliver(event)
        await rig.wait_reply(message, "Read them.")

        asked = fake_llm.requests[0]["messages"][-1]
        assert isinstance(asked["content"], str)  # no image: plain text content
        assert asked["content"].startswith("Alice: what is wrong?\n\nFile `app.log`:\n```\nERROR disk full")
        assert "File `data.csv`:\n```\nname,count\nkeys,3\n" in asked["content"]
        assert "Rotate keys every 90 days" in asked["content"]
        # Every download carried the bot token.
        assert sorted(rig.fake.downloads) == sorted([(log.id, True), (csv.id, True), (pdf.id, True)])


async def test_a_file_shared_with_someone_else_in_the_thread_is_context_for_the_next_question(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    """Bob shares a log with Alice in a thread the bot is part of: no answer, but the bot
    keeps the message and its file, so Alice can ask about "the log above"."""
    fake_llm.answer = Answer.of("Sure.")
    async with slack_rig(base_env, fake_llm) as rig:
        root = await rig.say("C1", ALICE, f"<@{BOT}> help us debug")
        await rig.wait_reply(root, "Sure.")
        log = rig.fake.add_file("app.log", b"ERROR disk full on /var\n", "text/plain")
        shared = rig.fake.user_message(
            "C1", BOB.id, f"<@{ALICE.id}> here is the log", thread_ts=root.ts, files=[log]
        )
        for event in rig.fake.events_for(shared):
            await rig.deliver(event)
        conversation = ConversationKey("slack", rig.fake.team_id, "C1", root.ts)

        async def kept() -> bool:
            return any(e.attachments for e in await rig.engine.conversations.load(conversation))

        await wait_until(kept)
        await rig.say("C1", ALICE, "what does the log above say?", thread_ts=root.ts)
        await rig.wait_reply(root, "Sure.Sure.")

        assert len(fake_llm.requests) == 2  # the shared log itself was not answered
        context = "\n".join(str(m["content"]) for m in fake_llm.requests[1]["messages"])
        assert "Bob: @Alice here is the log" in context
        assert "File `app.log`:\n```\nERROR disk full on /var" in context


async def test_image_to_a_vision_persona_goes_as_a_downscaled_image_url_part(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("A red square.")
    async with slack_rig(base_env, fake_llm, ATTACHMENT_IMAGE_MAX_SIDE="512") as rig:
        refused = await rig.command("vision on", user=ALICE, channel="C1")
        assert "only workspace admins" in refused["text"]
        reply = await rig.command("vision on", user=ADMIN, channel="C1")
        assert "vision is now `on`" in reply["text"]
        shot = rig.fake.add_file("shot.png", image(2000, 1000), "image/png")
        message = rig.fake.user_message("C1", ALICE.id, f"<@{BOT}> what is this?", files=[shot])
        for event in rig.fake.events_for(message):
            await rig.deliver(event)
        await rig.wait_reply(message, "A red square.")

        asked = fake_llm.requests[0]["messages"][-1]
        [picture] = image_parts(asked)
        assert picture.size == (512, 256)
        assert "Image `shot.png`" in text_of(asked)
        # Redis keeps the reference, never the image.
        stored = await rig.engine.redis.lrange(rig.engine.keys.history(_key(rig, message.ts)), 0, -1)
        entry = json.loads(stored[0])
        size = len(rig.fake.files[shot.id].data)
        assert entry["attachments"] == [
            {"name": "shot.png", "mime": "image/png", "size": size, "ref": shot.id}
        ]

        # A follow-up replays the image: fetched again by its reference (files.info, then the download).
        fake_llm.answer = Answer.of("Still red.")
        rig.engine.files.cache = type(rig.engine.files.cache)()  # another process: nothing cached
        await rig.say("C1", ALICE, "and now?", thread_ts=message.ts)
        await rig.wait_reply(message, "A red square.Still red.")
        replayed = fake_llm.requests[1]["messages"][1]
        assert [p.size for p in image_parts(replayed)] == [(512, 256)]
        assert len(rig.fake.downloads) == 2


async def test_image_to_a_text_only_persona_is_named_and_the_text_answered(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("From the text.")
    async with slack_rig(base_env, fake_llm) as rig:
        shot = rig.fake.add_file("shot.png", image(64, 64), "image/png")
        message = rig.fake.user_message("C1", ALICE.id, f"<@{BOT}> see this?", files=[shot])
        for event in rig.fake.events_for(message):
            await rig.deliver(event)
        await rig.fake.wait_for(lambda: "can't see images" in rig.fake.seen_text("C1", message.ts))
        await rig.idle()
        shown = rig.fake.seen_text("C1", message.ts)
        assert shown.startswith("From the text.")
        assert "this model (`test/model`)" in shown
        asked = fake_llm.requests[0]["messages"][-1]
        assert isinstance(asked["content"], str)
        assert "Image `shot.png`: not shown" in asked["content"]


async def test_a_file_slack_will_not_serve_is_named_and_the_rest_answered(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("Answered.")
    async with slack_rig(base_env, fake_llm) as rig:
        gone = rig.fake.add_file("gone.txt", b"bye", "text/plain")
        kept = rig.fake.add_file("kept.txt", b"hello", "text/plain")
        message = rig.fake.user_message("C1", ALICE.id, f"<@{BOT}> read", files=[gone, kept])
        rig.fake.files[gone.id].deleted = True  # deleted between the share and the download
        for event in rig.fake.events_for(message):
            await rig.deliver(event)
        await rig.fake.wait_for(lambda: "gone.txt" in rig.fake.seen_text("C1", message.ts))
        await rig.idle()
        shown = rig.fake.seen_text("C1", message.ts)
        assert shown.startswith("Answered.")
        assert "`gone.txt` was left out: I could not fetch it: it was deleted." in shown
        assert "File `kept.txt`:\n```\nhello" in fake_llm.requests[0]["messages"][-1]["content"]


async def test_a_file_deleted_before_the_event_is_named_not_skipped(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    """Slack sends a deleted file as a tombstone (no name, no link): the answer still says
    which file it could not read and why, and never asks Slack for it."""
    fake_llm.answer = Answer.of("Answered.")
    async with slack_rig(base_env, fake_llm) as rig:
        gone = rig.fake.add_file("gone.txt", b"bye", "text/plain")
        rig.fake.files[gone.id].deleted = True  # deleted before the share reached the bot
        message = rig.fake.user_message("C1", ALICE.id, f"<@{BOT}> read this", files=[gone])
        for event in rig.fake.events_for(message):
            await rig.deliver(event)
        await rig.fake.wait_for(lambda: gone.id in rig.fake.seen_text("C1", message.ts))
        await rig.idle()
        shown = rig.fake.seen_text("C1", message.ts)
        assert shown.startswith("Answered.")
        assert f"`{gone.id}` was left out: I could not fetch it: it was deleted." in shown
        assert not rig.fake.calls_to("files.info")


async def test_download_without_the_bot_token_gets_the_sign_in_page(base_env: dict[str, str]) -> None:
    import aiohttp

    async with FakeSlack() as fake:
        file = fake.add_file("a.txt", b"secret", "text/plain")
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"Authorization": "Bearer xoxb-test-wrong"}):
                async with session.get(file.url_private, headers=headers) as response:
                    assert response.status == 200
                    assert response.content_type == "text/html"
                    assert b"secret" not in await response.read()
            token = {"Authorization": f"Bearer {fake.bot_token}"}
            async with session.get(file.url_private, headers=token) as response:
                assert await response.read() == b"secret"
        assert fake.downloads == [(file.id, False), (file.id, False), (file.id, True)]


async def test_history_rebuilt_from_the_thread_reads_its_files_again(
    base_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis
) -> None:
    fake_llm.answer = Answer.of("Seen.")
    async with slack_rig(base_env, fake_llm) as rig:
        notes = rig.fake.add_file("notes.md", b"# Plan\nship friday\n", "text/markdown")
        root = rig.fake.user_message("C1", BOB.id, "here are the notes", files=[notes])
        await rig.say("C1", ALICE, f"<@{BOT}> when do we ship?", thread_ts=root.ts)
        await rig.fake.wait_for(lambda: rig.fake.bot_replies("C1", root.ts))
        await rig.idle()
        messages = fake_llm.requests[0]["messages"]
        assert messages[1]["content"].startswith("Bob: here are the notes\n\nFile `notes.md`:\n```\n# Plan")
        # Kept with its text, so the next turn needs no download.
        stored = await rig.engine.conversations.load(_key(rig, root.ts))
        assert stored[0].attachments[0].text == "# Plan\nship friday\n"


async def test_files_read_scope_is_in_the_manifest() -> None:
    from tests.slack.test_slack_manifest import listed

    assert "files:read" in listed("bot")


def _key(rig: SlackRig, thread: str) -> ConversationKey:
    return ConversationKey("slack", rig.fake.team_id, "C1", thread)
