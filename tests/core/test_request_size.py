"""One model request stays under MODEL_REQUEST_MAX_BYTES: images shrunk, then left out and named;
a 413 is never retried, names the files, and the thread's follow-ups go without them."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bot.app.runtime import open_engine
from bot.config import ModelSettings, load_settings
from bot.contract import Attachment
from bot.engine import Engine
from bot.model import llm
from bot.model.request_size import TOO_LARGE_NOTE
from tests.core.test_attachments import served
from tests.fakes.llm import Answer, FakeLLM
from tests.support.core import conversation, turn
from tests.support.files import image, image_parts
from tests.support.surfaces import RecordingSurface

SHOTS = 5


@functools.cache
def screenshot(n: int) -> bytes:
    return image(1200, 1200, noise=True)  # 4.3 MB of PNG that barely compresses


@asynccontextmanager
async def vision_engine(engine_env: dict[str, str], **env: str) -> AsyncIterator[Engine]:
    settings = load_settings(engine_env | {"BOT_VISION": "on"} | env, dotenv=False)
    async with open_engine(settings) as engine:
        yield engine


def shots_turn(text: str, count: int = SHOTS, *, message_id: str = "q1") -> tuple[object, RecordingSurface]:
    files = {f"shot{i}.png": screenshot(i) for i in range(1, count + 1)}
    _, fetch = served(files)
    surface = RecordingSurface()
    asked = dataclasses.replace(
        turn(text, surface=surface, message_id=message_id),
        attachments=tuple(Attachment(n, "image/png", len(d), ref=n) for n, d in files.items()),
        fetch_file=fetch,
    )
    return asked, surface


async def test_five_large_screenshots_are_reencoded_to_fit_one_request(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("Five screens.")
    assert len(screenshot(1)) > 4_200_000
    async with vision_engine(engine_env, ATTACHMENT_MAX_MESSAGE_BYTES="30000000") as engine:
        asked, surface = shots_turn("what changed?")
        outcome = await engine.answer(asked)  # type: ignore[arg-type]
    assert outcome.outcome == "ok"
    assert fake_llm.body_sizes[0] <= 8_000_000  # was 28 MB
    pictures = image_parts(fake_llm.requests[0]["messages"][-1])
    assert len(pictures) == SHOTS
    shrunk = [p for p in pictures if p.format == "JPEG"]
    assert shrunk and all(max(p.size) <= 768 for p in shrunk)  # the largest first, as many as needed
    assert "left out" not in surface.text


async def test_what_still_does_not_fit_is_named_and_kept_out_of_later_requests(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("Some screens.")
    cap = 400_000
    env = {"MODEL_REQUEST_MAX_BYTES": str(cap), "ATTACHMENT_MAX_MESSAGE_BYTES": "30000000"}
    async with vision_engine(engine_env, **env) as engine:
        asked, surface = shots_turn("what changed?")
        assert (await engine.answer(asked)).outcome == "ok"  # type: ignore[arg-type]
        sent = len(image_parts(fake_llm.requests[0]["messages"][-1]))
        assert fake_llm.body_sizes[0] <= cap
        assert 1 <= sent < SHOTS
        left = [f"shot{i}.png" for i in range(sent + 1, SHOTS + 1)]  # this message's last ones go first
        for name in left:
            note = f"`{name}` was left out: with it the request to the model would be over 400 KB."
            assert note in surface.text
        [stored] = [e for e in await engine.conversations.load(conversation()) if e.role == "user"]
        assert [a.name for a in stored.attachments if a.note == TOO_LARGE_NOTE] == left

        fetch = asked.fetch_file  # type: ignore[attr-defined]
        follow_up = dataclasses.replace(turn("and the first one?", message_id="q2"), fetch_file=fetch)
        assert (await engine.answer(follow_up)).outcome == "ok"
    assert fake_llm.body_sizes[1] <= cap
    replayed = [m for m in fake_llm.requests[1]["messages"] if image_parts(m)]
    assert replayed and all(len(image_parts(m)) <= sent for m in replayed)


async def test_a_413_is_not_retried_names_the_image_and_the_follow_up_goes_without_it(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("Without the picture.")
    fake_llm.max_body = 200_000  # the server's own limit, below MODEL_REQUEST_MAX_BYTES
    photo = image(600, 600, noise=True)
    _, fetch = served({"photo.png": photo})
    async with vision_engine(engine_env) as engine:
        surface = RecordingSurface()
        asked = dataclasses.replace(
            turn("what is this?", surface=surface, message_id="q1"),
            attachments=(Attachment("photo.png", "image/png", len(photo), ref="photo.png"),),
            fetch_file=fetch,
        )
        outcome = await engine.answer(asked)
        assert outcome.outcome == "error" and outcome.error == "too_large"
        assert fake_llm.statuses == [413]  # one request: never retried
        assert "The model API refused the request as too large (413) with `photo.png`." in surface.text
        [stored] = [e for e in await engine.conversations.load(conversation()) if e.role == "user"]
        assert stored.attachments[0].note == TOO_LARGE_NOTE

        again = RecordingSurface()
        follow_up = dataclasses.replace(
            turn("just tell me", surface=again, message_id="q2"), fetch_file=fetch
        )
        assert (await engine.answer(follow_up)).outcome == "ok"
    assert fake_llm.statuses == [413, 200]
    assert not any(image_parts(m) for m in fake_llm.requests[1]["messages"])
    assert "Without the picture." in again.text


async def test_the_client_refuses_a_body_over_the_cap_without_sending_it(fake_llm: FakeLLM) -> None:
    client = llm.LLMClient(ModelSettings(api_key="k", base_url=fake_llm.url, request_max_bytes=100_000))
    try:
        request = llm.ChatRequest("m", [{"role": "user", "content": "x" * 150_000}])
        with pytest.raises(llm.RequestTooLarge):
            async for _ in client.stream(request):
                pass
    finally:
        await client.aclose()
    assert fake_llm.requests == []


def test_413_maps_to_an_error_that_is_never_retried() -> None:
    error = llm.error_for_status(413, "too big", None)
    assert isinstance(error, llm.RequestTooLarge) and not error.retryable
