"""The core's side of files: kinds, limits, decoding, images, the prompt's budget, the stored bound."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from bot.app.runtime import open_engine
from bot.config import AttachmentSettings, load_settings
from bot.contract import Attachment, FetchFailed, HistoryEntry
from bot.contract.commands import Invalid, PersonaVision, parse
from bot.conversations.history import encode
from bot.conversations.personas import Persona
from bot.engine import Engine
from bot.files.attachments import BINARY, IMAGE, PDF, TEXT, Reader, decoded, kind_of, takes_images
from bot.model.prompt import IMAGE_TOKENS, build_prompt, estimate_tokens
from tests.fakes.llm import Answer, FakeLLM
from tests.support.core import turn
from tests.support.files import image, image_parts, pdf_with_text
from tests.support.surfaces import RecordingSurface


def served(files: dict[str, bytes], delay: float = 0.0) -> tuple[dict[str, int], object]:
    """A `FetchFile` over `files` (by ref) that counts its downloads and honours the limit."""
    counts: dict[str, int] = {}

    async def fetch(ref: str, limit: int) -> bytes:
        counts[ref] = counts.get(ref, 0) + 1
        if delay:
            await asyncio.sleep(delay)
        if ref not in files:
            raise FetchFailed("it was deleted")
        if len(files[ref]) > limit:
            raise FetchFailed(f"it is over {limit:,} bytes")
        return files[ref]

    return counts, fetch


def file(name: str, data: bytes, mime: str = "") -> Attachment:
    return Attachment(name, mime, len(data), ref=name)


@pytest.mark.parametrize(
    ("name", "mime", "kind"),
    [
        ("notes.txt", "text/plain", TEXT), ("README.md", "", TEXT), ("main.py", "text/x-python", TEXT),
        ("data.json", "application/json", TEXT), ("table.csv", "text/csv", TEXT), ("app.log", "", TEXT),
        ("Dockerfile", "", TEXT), ("shot.png", "image/png", IMAGE), ("photo.JPG", "", IMAGE),
        ("spec.pdf", "application/pdf", PDF), ("a.zip", "application/zip", BINARY),
        ("run.exe", "application/octet-stream", BINARY), ("song.mp3", "audio/mpeg", BINARY),
        ("script.py", "application/octet-stream", TEXT),  # a platform that does not know the type
    ],
)
def test_kind_of_a_file(name: str, mime: str, kind: str) -> None:
    assert kind_of(Attachment(name, mime)) == kind


def test_text_is_decoded_safely() -> None:
    assert decoded("héllo".encode(), 100) == "héllo"
    assert decoded(b"\xef\xbb\xbfBOM", 100) == "BOM"
    assert decoded("utf16 ✓".encode("utf-16"), 100) == "utf16 ✓"
    assert decoded(b"bad \xff\xfe bytes\x07", 100) == "bad \ufffd\ufffd bytes"  # replaced; BEL dropped
    assert decoded(b"x" * 1000, 10) == "x" * 10
    with pytest.raises(ValueError, match="NUL"):
        decoded(b"ELF\x00\x01\x02", 100)


async def test_limits_name_each_file_left_out_and_why() -> None:
    settings = AttachmentSettings(max_files=3, max_file_bytes=1000, max_message_bytes=1500, max_text_chars=50)
    files = {"a.txt": b"a" * 40, "big.txt": b"b" * 1200, "c.txt": b"c" * 900, "d.txt": b"d" * 30,
             "e.txt": b"e"}
    counts, fetch = served(files)
    intake = await Reader(settings).read([file(n, d, "text/plain") for n, d in files.items()], fetch)
    by_name = {f.name: f for f in intake.files}
    assert by_name["a.txt"].text == "a" * 40
    assert by_name["big.txt"].note == "it is 1.2 KB, over the 1.0 KB limit per file"
    assert by_name["c.txt"].text == "c" * 10  # the text budget (50 characters) ran out in it
    assert by_name["d.txt"].note == "only 3 files are read per message"
    assert intake.notes == [
        "`big.txt` was left out: it is 1.2 KB, over the 1.0 KB limit per file.",
        "`d.txt` was left out: only 3 files are read per message.",
        "`e.txt` was left out: only 3 files are read per message.",
        "`c.txt` was cut: I read the first 50 characters of a message's files.",
    ]
    assert counts == {"a.txt": 1, "c.txt": 1}  # nothing over a limit was downloaded


async def test_message_byte_limit_and_a_size_the_platform_did_not_say() -> None:
    settings = AttachmentSettings(max_file_bytes=1000, max_message_bytes=1000)
    files = {"one.txt": b"1" * 700, "two.txt": b"2" * 700, "unsized.txt": b"3" * 5000}
    _, fetch = served(files)
    attachments = [file("one.txt", files["one.txt"]), file("two.txt", files["two.txt"]),
                   Attachment("unsized.txt", "text/plain", 0, "unsized.txt")]
    intake = await Reader(settings).read(attachments, fetch)
    assert [f.note for f in intake.files] == [
        "", "the message's files are over 1.0 KB together", "I could not fetch it: it is over 1,000 bytes",
    ]


async def test_pdf_text_and_unreadable_pdfs() -> None:
    files = {"ok.pdf": pdf_with_text("First page", "Second page"), "bad.pdf": b"%PDF-1.4 garbage"}
    _, fetch = served(files)
    intake = await Reader(AttachmentSettings()).read([file(n, d) for n, d in files.items()], fetch)
    ok, bad = intake.files
    assert ok.text == "[page 1]\nFirst page\n\n[page 2]\nSecond page"
    assert bad.note == "it is not a PDF I can read"


async def test_images_are_downscaled_and_damaged_ones_named() -> None:
    files = {"wide.png": image(4000, 1000), "tall.jpg": image(600, 3000, "JPEG"),
             "small.png": image(100, 50), "broken.png": b"\x89PNG not really"}
    _, fetch = served(files)
    intake = await Reader(AttachmentSettings(image_max_side=800)).read(
        [file(n, d) for n, d in files.items()], fetch
    )
    sizes = {ref: image_parts({"content": [{"type": "image_url", "image_url": {"url": url}}]})[0].size
             for ref, url in intake.images.items()}
    assert sizes == {"wide.png": (800, 200), "tall.jpg": (160, 800), "small.png": (100, 50)}
    assert intake.files[3].note == "it is not an image I can read"
    assert all(f.text is None for f in intake.files)  # images are kept by reference only


async def test_a_slow_fetch_times_out_into_a_note() -> None:
    _, fetch = served({"slow.txt": b"x"}, delay=5)
    intake = await Reader(AttachmentSettings(fetch_timeout=0.1)).read([file("slow.txt", b"x")], fetch)
    assert intake.notes == ["`slow.txt` was left out: I could not fetch it: it took over 0.1 s."]


async def test_a_fetch_that_raises_anything_is_a_note() -> None:
    async def broken(ref: str, limit: int) -> bytes:
        raise ConnectionResetError("peer gone")

    intake = await Reader(AttachmentSettings()).read([file("a.txt", b"x")], broken)
    assert intake.notes == [
        "`a.txt` was left out: I could not fetch it: the platform refused or failed the download."
    ]


def test_prompt_trims_the_oldest_files_first_and_never_the_question() -> None:
    old = HistoryEntry("user", "old question", "Bob", attachments=(
        Attachment("old.log", "text/plain", text="o" * 3000),
    ))
    answer = HistoryEntry("assistant", "old answer")
    current = HistoryEntry("user", "new question", "Alice", attachments=(
        Attachment("new.log", "text/plain", text="n" * 3000),
    ))
    room = estimate_tokens("sys") + 2 * estimate_tokens("x" * 3200) + 200
    prompt = build_prompt("sys", [old, answer, current], budget=room - 1000)
    texts = [m["content"] for m in prompt.messages]
    assert "File `old.log`: not read (left out to fit the model's context)." in texts[1]
    assert "n" * 3000 in texts[3]  # the current message's file stays while an older one can go
    assert prompt.trimmed == []
    tight = build_prompt("sys", [old, answer, current], budget=estimate_tokens("sys") + 200)
    assert tight.trimmed == ["new.log"]
    assert tight.messages[-1]["content"].startswith("Alice: new question\n\nFile `new.log`: not read")


def test_images_count_in_the_budget_and_go_as_parts() -> None:
    current = HistoryEntry("user", "look", "Alice", attachments=(Attachment("a.png", "image/png", ref="r1"),))
    prompt = build_prompt("sys", [current], budget=10_000, images={"r1": "data:image/png;base64,AAAA"})
    assert prompt.messages[-1]["content"][1] == {
        "type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}
    }
    small = build_prompt("sys", [current], budget=IMAGE_TOKENS // 2, images={"r1": "data:,"})
    assert small.trimmed == ["a.png"] and isinstance(small.messages[-1]["content"], str)


def test_vision_command_persona_and_defaults() -> None:
    assert parse("/persona vision on") == PersonaVision(True)
    assert parse("persona vision default") == PersonaVision(None)
    assert isinstance(parse("/persona vision maybe"), Invalid)
    assert Persona.from_hash(Persona("p", vision=False).to_hash()).vision is False
    assert Persona.from_hash(Persona("p").to_hash()).vision is None
    auto = AttachmentSettings(vision_models=frozenset({"acme/seer"}))
    assert takes_images("Qwen/Qwen2.5-VL-72B-Instruct", auto)
    assert takes_images("acme/seer", auto)
    assert not takes_images("Qwen/Qwen3.5-9B", auto)
    assert takes_images("any", dataclasses.replace(auto, vision="on"))
    assert not takes_images("gpt-4o", dataclasses.replace(auto, vision="off"))
    env = {"BOT_VISION": "on", "ATTACHMENT_MAX_FILES": "2", "VISION_MODELS": "a/b, c/d"}
    loaded = load_settings(env, dotenv=False).attachments
    assert (loaded.vision, loaded.max_files, loaded.vision_models) == ("on", 2, frozenset({"a/b", "c/d"}))


# -- through the engine, on Redis -----------------------------------------------------------


@pytest.fixture
async def vision_engine(engine_env: dict[str, str]) -> AsyncIterator[Engine]:
    async with open_engine(load_settings(engine_env | {"BOT_VISION": "on"}, dotenv=False)) as engine:
        yield engine


async def test_a_file_alone_is_a_question(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.of("It says hi.")
    _, fetch = served({"a.txt": b"hi"})
    asked = dataclasses.replace(turn(""), attachments=(file("a.txt", b"hi"),), fetch_file=fetch)
    outcome = await engine.answer(asked)
    assert outcome.outcome == "ok"
    assert fake_llm.requests[0]["messages"][-1]["content"] == "Alice: \n\nFile `a.txt`:\n```\nhi\n```"


async def test_redis_bytes_per_turn_stay_bounded_with_a_10_mb_attachment(
    vision_engine: Engine, fake_llm: FakeLLM, redis_client: redis.Redis
) -> None:
    engine = vision_engine
    fake_llm.answer = Answer.of("Big.")
    big = b"2026-12-01 12:00:00 INFO request served in 12 ms\n" * 210_000  # 10.3 MB
    assert len(big) > 10_000_000
    files = {"huge.log": big, "shot.jpg": image(2000, 2000, "JPEG", noise=True)}
    _, fetch = served(files)
    surface = RecordingSurface()
    asked = dataclasses.replace(
        turn("what happened?", surface=surface),
        attachments=(file("huge.log", big, "text/plain"), file("shot.jpg", files["shot.jpg"], "image/jpeg")),
        fetch_file=fetch,
    )
    outcome = await engine.answer(asked)
    assert outcome.outcome == "ok"
    key = engine.keys.history(asked.conversation)
    stored = await redis_client.lrange(key, 0, -1)
    user_bytes = len(stored[0].encode())
    limits = engine.settings.attachments
    # The bound: 4 bytes a character (UTF-8) for the question and the files' text, JSON's
    # escapes (2 bytes a newline), and 1 KB of name, type, size and reference per file.
    bound = 4 * (engine.settings.max_input_chars + limits.max_text_chars) + 1000 * limits.max_files
    assert user_bytes <= bound
    assert user_bytes < 100_000  # in practice: the kept 60,000 characters, not 10 MB nor the image
    memory = await redis_client.memory_usage(key)
    assert memory is not None and memory < bound
    assert "`huge.log` was cut: I read the first 60,000 characters" in surface.text
    [picture] = image_parts(fake_llm.requests[0]["messages"][-1])
    assert picture.size == (1024, 1024)
    assert len(files["shot.jpg"]) > 2_000_000  # a photo-sized image, not a line in Redis


async def test_vision_off_for_a_channel_overrides_the_default(
    vision_engine: Engine, fake_llm: FakeLLM
) -> None:
    from bot.contract import Author

    reply = await vision_engine.command(
        "/persona vision off", scope=turn("x").conversation.channel_scope, conversation=None,
        actor=Author("U1", "Alice"), can_admin=True,
    )
    assert reply == "Done: vision is now `off` in this channel."
    fake_llm.answer = Answer.of("Text only.")
    _, fetch = served({"a.png": image(10, 10)})
    surface = RecordingSurface()
    png = file("a.png", image(10, 10), "image/png")
    asked = dataclasses.replace(turn("see?", surface=surface), attachments=(png,), fetch_file=fetch)
    await vision_engine.answer(asked)
    assert image_parts(fake_llm.requests[0]["messages"][-1]) == []
    assert "I can't see images with this model (`test/model`)" in surface.text


def test_stored_entry_never_holds_image_bytes() -> None:
    entry = HistoryEntry("user", "q", attachments=(Attachment("a.png", "image/png", 4_000_000, "F1"),))
    assert len(encode(entry)) < 200


async def test_a_slow_file_does_not_let_a_later_message_overtake(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.of("ok")
    _, slow_fetch = served({"slow.txt": b"x"}, delay=0.3)
    first = dataclasses.replace(
        turn("first", message_id="m1"), attachments=(file("slow.txt", b"x"),), fetch_file=slow_fetch
    )
    second = turn("second", message_id="m2")
    one, two = engine.submit(first), engine.submit(second)  # tasks start in this order
    await asyncio.gather(one, two)
    asked = [m["messages"][-1]["content"] for m in fake_llm.requests]
    assert [a.split("\n")[0] for a in asked] == ["Alice: first", "Alice: second"]
