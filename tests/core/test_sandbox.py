"""Untrusted files are parsed in the sandbox (bot/files/sandbox.py): hostile ones are cut short and
named in the answer, the rest of the message and everyone else's conversations go on."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.contract import Attachment
from bot.engine import Engine
from bot.files.sandbox import ParseFailed, Sandbox, SandboxLimits
from bot.ops.outcome import Outcome
from tests.core.test_attachments import served
from tests.fakes.llm import Answer, FakeLLM
from tests.support.core import turn
from tests.support.files import image_parts, pdf_bomb, pdf_inflating, pdf_with_text, png_of_size, text_of
from tests.support.helpers import wait_until
from tests.support.surfaces import RecordingSurface

SECONDS = 1.0  # ATTACHMENT_PARSE_SECONDS here: the hostile files need far more than that
SLOW_PDF = functools.partial(pdf_bomb, pages=100, operators=100_000)  # ~0.1 s a page, little memory


@functools.cache
def huge_png() -> bytes:
    return png_of_size(14_000, 14_000)  # 1.6 s of CPU to make: once per worker


@pytest.fixture
async def sandboxed(engine_env: dict[str, str]) -> AsyncIterator[Engine]:
    env = engine_env | {
        "ATTACHMENT_PARSE_SECONDS": str(SECONDS), "ATTACHMENT_PARSE_WORKERS": "2", "BOT_VISION": "on",
    }
    async with open_engine(load_settings(env, dotenv=False)) as engine:
        yield engine


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    pool = Sandbox(SandboxLimits(seconds=SECONDS, memory_mb=128, workers=2))
    try:
        yield pool
    finally:
        await pool.close()


def with_files(text: str, files: dict[str, bytes], *, thread: str = "t1") -> tuple[object, RecordingSurface]:
    surface = RecordingSurface()
    _, fetch = served(files)
    attachments = tuple(Attachment(name, "", len(data), ref=name) for name, data in files.items())
    asked = dataclasses.replace(
        turn(text, thread=thread, surface=surface, message_id=f"m-{thread}"),
        attachments=attachments, fetch_file=fetch,
    )
    return asked, surface


async def test_a_pdf_bomb_is_named_with_its_reason_and_the_rest_is_answered(
    sandboxed: Engine, fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("Your notes say hi.")
    bomb = pdf_bomb()  # as reported: 10 pages sharing one stream of empty text operators (~90 s of CPU)
    assert len(bomb) < 20_000
    asked, surface = with_files("what do these say?", {"bomb.pdf": bomb, "notes.txt": b"hi"})
    outcome = await sandboxed.answer(asked)  # type: ignore[arg-type]
    assert outcome.outcome == "ok"
    assert "Your notes say hi." in surface.text
    # Whichever limit it reaches first (memory here, time on a slower parser), it is named.
    assert "`bomb.pdf` was left out: " in surface.text
    assert ("this PDF took too long to read" in surface.text
            or "reading this PDF needed more than 128 MB" in surface.text)
    asked_model = text_of(fake_llm.requests[0]["messages"][-1])
    assert "File `notes.txt`" in asked_model and "bomb.pdf" not in asked_model.split("notes.txt")[1]


async def test_a_slow_pdf_is_cut_at_the_time_limit(sandbox: Sandbox) -> None:
    with pytest.raises(ParseFailed, match=r"^this PDF took too long to read \(over 1 s\)$"):
        await sandbox.parse("pdf", SLOW_PDF(), 60_000)
    assert await sandbox.parse("pdf", pdf_with_text("after"), 100) == "[page 1]\nafter"  # a new worker


async def test_an_inflating_stream_is_cut_at_the_memory_limit(sandbox: Sandbox) -> None:
    data = pdf_inflating()  # 70 KB that inflates to 70 MB
    assert len(data) < 100_000
    limit = r"^(reading this PDF needed more than 128 MB|this PDF took too long)"
    with pytest.raises(ParseFailed, match=limit):
        await sandbox.parse("pdf", data, 60_000)


async def test_a_huge_png_is_refused_from_its_header(sandboxed: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.of("No picture.")
    asked, surface = with_files("look", {"wall.png": huge_png()})
    outcome = await sandboxed.answer(asked)  # type: ignore[arg-type]
    assert outcome.outcome == "ok"
    assert ("`wall.png` was left out: it is 14,000 × 14,000 pixels; I open images of up to 40 "
            "megapixels.") in surface.text
    assert image_parts(fake_llm.requests[0]["messages"][-1]) == []


async def test_ten_hostile_pdfs_at_once_take_two_workers_and_another_conversation_goes_on(
    sandboxed: Engine, fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("Answered.")
    hostile = [with_files("read it", {f"bomb{i}.pdf": SLOW_PDF()}, thread=f"h{i}") for i in range(10)]
    tasks = [sandboxed.submit(asked) for asked, _ in hostile]  # type: ignore[arg-type]
    await wait_until(lambda: len(sandboxed.files.sandbox.pids) == 2, timeout=30)
    plain_surface = RecordingSurface()
    plain: Outcome = await sandboxed.answer(turn("a plain question", thread="other", surface=plain_surface))
    assert plain.outcome == "ok" and "Answered." in plain_surface.text
    # Answered while the hostile files still queue for the pool: nothing waited on them.
    assert sum(not t.done() for t in tasks) >= 6
    most = 0
    while not all(t.done() for t in tasks):
        most = max(most, len(sandboxed.files.sandbox.pids))
        await asyncio.wait(tasks, timeout=0.05)
    assert most <= 2  # the pool's size, however many files wait
    for i, (_, surface) in enumerate(hostile):
        assert f"`bomb{i}.pdf` was left out: this PDF took too long to read (over 1 s)." in surface.text
        assert "Answered." in surface.text


async def test_a_worker_killed_mid_parse_is_named_and_replaced(sandbox: Sandbox) -> None:
    parsing = asyncio.create_task(sandbox.parse("pdf", SLOW_PDF(), 60_000))
    await wait_until(lambda: sandbox.pids, timeout=30)
    [pid] = sandbox.pids
    await asyncio.sleep(0)  # the job is on its way to the worker
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ParseFailed, match=r"^the file reader stopped while reading it$"):
        await parsing
    assert sandbox.pids == []
    assert await sandbox.parse("pdf", pdf_with_text("still here"), 100) == "[page 1]\nstill here"
    assert sandbox.started == 2 and sandbox.pids != [pid]


async def test_a_worker_killed_while_idle_is_replaced_before_the_next_job(sandbox: Sandbox) -> None:
    assert await sandbox.parse("pdf", pdf_with_text("one"), 100) == "[page 1]\none"
    [pid] = sandbox.pids
    os.kill(pid, signal.SIGKILL)
    await wait_until(lambda: sandbox._idle[0].process.returncode is not None, timeout=10)
    assert await sandbox.parse("pdf", pdf_with_text("two"), 100) == "[page 1]\ntwo"
    assert sandbox.started == 2


async def test_a_worker_has_its_limits_and_none_of_the_bots_secrets(sandbox: Sandbox) -> None:
    os.environ["SANDBOX_TEST_SECRET"] = "xoxb-test-not-for-workers"
    try:
        await sandbox.parse("pdf", pdf_with_text("x"), 100)
    finally:
        del os.environ["SANDBOX_TEST_SECRET"]
    [pid] = sandbox.pids
    proc = Path(f"/proc/{pid}")
    assert b"xoxb-test-not-for-workers" not in (proc / "environ").read_bytes()
    limits = (proc / "limits").read_text().splitlines()
    address_space = next(line for line in limits if line.startswith("Max address space"))
    assert address_space.split()[3:5] == [str(128 * 1024 * 1024)] * 2
    assert (proc / "oom_score_adj").read_text().strip() == "1000"  # the kernel's first pick, not the bot
    assert os.getpriority(os.PRIO_PROCESS, pid) >= os.getpriority(os.PRIO_PROCESS, 0) + 10


async def test_an_unreadable_file_keeps_its_worker(sandbox: Sandbox) -> None:
    with pytest.raises(ParseFailed, match=r"^it is not a PDF I can read$"):
        await sandbox.parse("pdf", b"%PDF-1.4 garbage", 100)
    with pytest.raises(ParseFailed, match=r"^it is not an image I can read$"):
        await sandbox.parse("image", b"\x89PNG not really", 100)
    assert sandbox.started == 1
