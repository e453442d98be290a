"""Crash recovery: answers in flight are on record in Redis; after a kill -9 the next start
edits each orphaned message to its text so far plus "restarted mid-answer — ask again".

Two end-to-end tests kill a process mid-answer and start another:
- this module as a worker (`python -m tests.ops.test_ops_recovery ask|serve FILE`): the
  real `Service`, engine and upkeep with a "file" platform whose messages live in a
  JSON file, so they outlive the process that wrote them;
- the real `python -m bot run` on the fake Slack, with the recovery timings shortened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from bot.contract import Adapter, Author, Controls, ConversationKey, ReplySurface, SurfaceLimits, Turn
from bot.delivery.reply import ReplyStream
from bot.engine import Engine
from bot.ops.inflight import RESTARTED_NOTE, InFlight, Record
from bot.ops.upkeep import Upkeep
from bot.ops.usage import Usage
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack import FakeSlack
from tests.support.helpers import bot_process, free_port, wait_until
from tests.support.slack_fixtures import ALICE, BOT, slack_env
from tests.support.surfaces import RecordingSurface

# The bot under test runs in a process of its own, on the wall clock (tests/support/clock.py).
pytestmark = pytest.mark.real_time

ROOT = Path(__file__).resolve().parents[2]

CONVERSATION = ConversationKey("file", "W1", "C1", "t1")


# ---- in process -----------------------------------------------------------------------


@dataclass
class Platform:
    """Surfaces by conversation, as an adapter would rebuild them after a restart."""

    surfaces: dict[ConversationKey, RecordingSurface] = field(default_factory=dict)
    asked: list[tuple[ConversationKey, str]] = field(default_factory=list)

    async def surface_for(self, conversation: ConversationKey, message_id: str) -> ReplySurface | None:
        self.asked.append((conversation, message_id))
        return self.surfaces.get(conversation)


class Deferred(list[Callable[[Any], object]]):
    """Stands in for the conversation lock's release: collects what a turn defers to it."""

    def __call__(self, queue: Callable[[Any], object]) -> None:
        self.append(queue)

    async def run(self, client: redis.Redis) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for queue in self:
                queue(pipe)
            await pipe.execute()


async def leave_orphan(
    client: redis.Redis, prefix: str, text: str, ids: list[str], conversation: ConversationKey = CONVERSATION
) -> InFlight:
    """A process that had `text` on screen in messages `ids` and died without finishing."""
    dead = InFlight(client, prefix, owner_ttl=0.2)
    upkeep = Upkeep(client, dead, Usage(client, prefix), tick=3600)
    await upkeep.start()  # the heartbeat
    reply = ReplyStream(RecordingSurface())
    reply.text, reply.message_ids = text, ids
    async with dead.track(conversation, reply, Deferred()):
        await upkeep.tick()  # on record
    # No final text landed, so the record stays; the process "dies": no clean stop.
    await wait_until(lambda: _gone(client, dead.heartbeat_key(dead.owner)))
    return dead


async def _gone(client: redis.Redis, key: str) -> bool:
    return not await client.exists(key)


async def test_a_dead_owners_answer_is_marked_once_even_with_two_sweepers(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    dead = await leave_orphan(redis_client, redis_prefix, "Partial answer", ["m1"])
    platform = Platform()
    surface = RecordingSurface(messages={"m1": "Partial answer and a bit more"})
    platform.surfaces[CONVERSATION] = surface
    sweepers = [InFlight(redis_client, redis_prefix) for _ in range(2)]
    for sweeper in sweepers:
        sweeper.register("file", platform.surface_for)

    marked = await asyncio.gather(*(s.sweep() for s in sweepers))
    assert sorted(marked) == [0, 1]
    assert surface.messages == {"m1": f"Partial answer\n\n{RESTARTED_NOTE}"}
    assert "restarted mid-answer — ask again" in surface.text
    assert platform.asked == [(CONVERSATION, "m1")]
    assert not await redis_client.exists(dead.records_key(dead.owner))
    assert await sweepers[0].sweep() == 0  # nothing left, and the dead owner is forgotten
    assert not await redis_client.sismember(f"{redis_prefix}:owners", dead.owner)


async def test_a_live_owners_answers_are_left_alone(redis_client: redis.Redis, redis_prefix: str) -> None:
    live = InFlight(redis_client, redis_prefix)
    upkeep = Upkeep(redis_client, live, Usage(redis_client, redis_prefix), tick=3600)
    await upkeep.start()
    reply = ReplyStream(RecordingSurface())
    reply.text, reply.message_ids = "streaming", ["m1"]
    platform = Platform()
    sweeper = InFlight(redis_client, redis_prefix)
    sweeper.register("file", platform.surface_for)
    release = Deferred()
    async with live.track(CONVERSATION, reply, release):
        await upkeep.tick()
        assert await redis_client.hlen(live.records_key(live.owner)) == 1
        assert await sweeper.sweep() == 0
        assert platform.asked == []
        reply.final_at = 1.0  # the final text landed
    await release.run(redis_client)  # the round trip that releases the conversation's lock
    assert not await redis_client.exists(live.records_key(live.owner))  # settled
    await upkeep.stop()


async def test_orphans_of_another_platform_are_left_for_a_process_that_has_it(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    other = ConversationKey("elsewhere", "W", "C", "t")
    dead = await leave_orphan(redis_client, redis_prefix, "text", ["m1"], conversation=other)
    sweeper = InFlight(redis_client, redis_prefix)
    sweeper.register("file", Platform().surface_for)
    assert await sweeper.sweep() == 0
    assert await redis_client.hlen(dead.records_key(dead.owner)) == 1


async def test_the_note_continues_in_a_new_message_when_the_text_is_full(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    text = "x" * 95
    await leave_orphan(redis_client, redis_prefix, text, ["m1"])
    surface = RecordingSurface(limits=SurfaceLimits(max_chars=100), messages={"m1": text})
    platform = Platform({CONVERSATION: surface})
    sweeper = InFlight(redis_client, redis_prefix)
    sweeper.register("file", platform.surface_for)
    assert await sweeper.sweep() == 1
    assert list(surface.messages) == ["m1", "m2"]
    assert surface.messages["m1"].startswith("x" * 95)
    assert surface.text.endswith(RESTARTED_NOTE)


async def test_an_answer_cut_while_in_parts_is_marked_once_in_one_message(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    # Three parts were up (the text so far includes words no part showed yet).
    await leave_orphan(redis_client, redis_prefix, "One. Two. Three. Fo", ["m1", "m2", "m3"])
    surface = RecordingSurface(messages={"m1": "One.", "m2": "Two.", "m3": "Three."})
    platform = Platform({CONVERSATION: surface})
    sweeper = InFlight(redis_client, redis_prefix)
    sweeper.register("file", platform.surface_for)
    assert await sweeper.sweep() == 1
    assert surface.messages == {"m1": f"One. Two. Three. Fo\n\n{RESTARTED_NOTE}"}  # no word twice


def test_records_survive_encoding() -> None:
    record = Record(CONVERSATION, ("m1", "m2"), "déjà vu — \"quoted\"", 123.5)
    assert Record.decode(record.encode()) == record
    assert Record.decode("not json") is None


# ---- kill -9 and restart: real processes ------------------------------------------------


@asynccontextmanager
async def worker(mode: str, path: Path, env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.ops.test_ops_recovery", mode, str(path),
        cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)} | env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def shown(path: Path) -> dict[str, str]:
    try:
        data: dict[str, str] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


async def test_kill_9_mid_answer_then_restart_marks_the_orphan(
    engine_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis, redis_prefix: str,
    tmp_path: Path,
) -> None:
    fake_llm.answer = Answer.words(600, tokens_per_second=20)  # 30 s: it will not finish
    messages = tmp_path / "messages.json"
    async with worker("ask", messages, engine_env) as first:
        assert first.stdout is not None
        owner = (await asyncio.wait_for(first.stdout.readline(), 30)).decode().split()[-1]
        records = f"{redis_prefix}:inflight:{owner}"

        async def on_record() -> bool:
            raw = await redis_client.hvals(records)
            return bool(raw) and "w5" in json.loads(raw[0])["text"]

        await wait_until(on_record, timeout=20)
        first.kill()  # SIGKILL: no clean-up of any kind
        await first.wait()

    (record,) = [Record.decode(v) for v in await redis_client.hvals(records)]
    assert record is not None and record.conversation == CONVERSATION
    before = shown(messages)
    assert list(before) == list(record.message_ids) == ["m1"]
    assert before["m1"].startswith(record.text)  # the record trails the screen by a tick at most
    assert not before["m1"].endswith(RESTARTED_NOTE)

    async with worker("serve", messages, engine_env) as second:
        await wait_until(lambda: shown(messages).get("m1", "").endswith(RESTARTED_NOTE), timeout=20)
        assert shown(messages)["m1"] == f"{record.text.strip()}\n\n{RESTARTED_NOTE}"
        assert not await redis_client.exists(records)

        async def forgotten() -> bool:  # the sweep drops the owner right after marking
            return not await redis_client.sismember(f"{redis_prefix}:owners", owner)

        await wait_until(forgotten)
        second.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 0, err.decode()
        assert "marked an answer cut by a restart" in err.decode()
    assert len(fake_llm.requests) == 1  # the restart asked nothing again


# ---- kill -9 and restart of the real `python -m bot run` on the fake Slack ---------------

# `python -m bot run` with the recovery timings shortened (a dead process is noticed after
# 0.5 s instead of 15 s); everything else is the real command.
FAST_RUN = (
    "import sys, bot.ops.inflight as i, bot.ops.upkeep as u; "
    "i.OWNER_TTL, u.TICK, u.HEARTBEAT_EVERY, u.SWEEP_EVERY = 0.5, 0.05, 0.1, 0.1; "
    "from bot.__main__ import main; sys.exit(main(['run']))"
)


def bot_run(env: dict[str, str]) -> AbstractAsyncContextManager[asyncio.subprocess.Process]:
    return bot_process("-c", FAST_RUN, env=env)


async def test_kill_9_of_bot_run_then_restart_marks_the_slack_message(
    engine_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis, redis_prefix: str
) -> None:
    fake_llm.answer = Answer.words(600, tokens_per_second=20)  # 30 s: it will not finish
    async with FakeSlack() as slack:
        slack.add_user(dataclasses.replace(ALICE))

        def env() -> dict[str, str]:
            return slack_env(engine_env, slack, "socket") | {"HEALTH_PORT": str(free_port())}

        async def recorded() -> bool:
            async for key in redis_client.scan_iter(f"{redis_prefix}:inflight:*"):
                values = await redis_client.hvals(key)
                return bool(values) and "w5" in json.loads(values[0])["text"]
            return False

        async with bot_run(env()) as first:
            await slack.wait_for(lambda: slack.connected, 30)
            message = slack.user_message("C1", ALICE.id, f"<@{BOT}> tell me a story")
            for event in slack.events_for(message):
                await slack.wait_ack(await slack.push_event(event))
            await wait_until(recorded, timeout=20)
            first.kill()
            await first.wait()
        cut = slack.seen_text("C1", message.ts)
        # Slack is edited about once a second; the record may be ahead of the screen.
        assert cut.startswith("w1") and "Interrupted" not in cut

        async with bot_run(env()) as second:
            await slack.wait_for(lambda: "restarted mid-answer" in slack.seen_text("C1", message.ts), 20)
            second.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(second.communicate(), 30)
            assert second.returncode == 0, err.decode()
    shown = slack.seen_text("C1", message.ts)
    assert shown.startswith("w1 w2 w3 w4 w5")
    assert shown.endswith("_(Interrupted: the bot restarted mid-answer — ask again.)_")
    assert len(slack.bot_replies("C1", message.ts)) == 1  # the same message, edited
    assert len(fake_llm.requests) == 1


# ---- the worker -------------------------------------------------------------------------


class FileSurface:
    """Messages kept in a JSON file: what a platform shows, surviving the process."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def limits(self) -> SurfaceLimits:
        return SurfaceLimits(max_chars=100_000, min_edit_interval=0.02)

    def _save(self, messages: dict[str, str]) -> None:
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(messages))
        partial.replace(self.path)  # atomic: a kill never leaves half a file

    async def post(self, text: str, *, complete: bool = False, controls: Controls | None = None) -> str:
        messages = shown(self.path)
        message_id = f"m{len(messages) + 1}"
        self._save(messages | {message_id: text})
        return message_id

    async def delete(self, message_id: str) -> None:
        messages = shown(self.path)
        messages.pop(message_id, None)
        self._save(messages)

    async def edit(self, message_id: str, text: str, *, controls: Controls | None = None) -> None:
        messages = shown(self.path)
        assert message_id in messages
        self._save(messages | {message_id: text})

    async def set_status(self, status: str | None) -> None:
        return None


class FileAdapter(Adapter):
    """A platform adapter for the "file" platform; `ask` makes it receive one question."""

    name = "file"
    reaches_earlier_messages = True
    connected = False

    def __init__(self, engine: Engine, path: Path, ask: bool) -> None:
        self.engine = engine
        self.path = path
        self.ask = ask
        self.connected = False

    async def start(self) -> None:
        self.connected = True
        if self.ask:
            surface = FileSurface(self.path)
            self.engine.submit(Turn(CONVERSATION, Author("U1", "Alice"), "tell me a story", "q1", surface))

    async def stop(self) -> None:
        self.connected = False

    async def surface_for(self, conversation: ConversationKey, message_id: str) -> ReplySurface | None:
        return FileSurface(self.path) if conversation.platform == "file" else None


async def _work(mode: str, path: Path) -> int:
    from bot.app.runtime import open_engine
    from bot.app.service import Service
    from bot.config import load_settings
    from bot.ops.logs import setup_logging

    settings = load_settings(dotenv=False)
    setup_logging("INFO", "text")
    async with open_engine(settings) as engine:
        engine.inflight.owner_ttl = 0.5  # a dead worker is noticed quickly
        upkeep = Upkeep(engine.redis, engine.inflight, engine.usage,
                        tick=0.05, heartbeat_every=0.1, sweep_every=0.1)
        adapter = FileAdapter(engine, path, ask=mode == "ask")
        service = Service(settings, engine, [adapter], health_port=0, upkeep=upkeep)
        print(f"owner {engine.inflight.owner}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        return await service.run(stop)


if __name__ == "__main__":
    sys.exit(asyncio.run(_work(sys.argv[1], Path(sys.argv[2]))))


async def test_an_answer_that_lands_drops_its_record_with_the_lock_release(
    engine: Engine, fake_llm: FakeLLM, redis_client: redis.Redis
) -> None:
    """The record goes in the same round trip that releases the conversation, not one of its own."""
    upkeep = Upkeep(engine.redis, engine.inflight, engine.usage, tick=3600)
    await upkeep.start()
    try:
        fake_llm.answer = Answer.words(40, tokens_per_second=40)
        surface = RecordingSurface()
        task = engine.submit(Turn(CONVERSATION, Author("U1", "Alice"), "hi", "m1", surface))
        records = engine.inflight.records_key(engine.inflight.owner)
        await wait_until(lambda: bool(surface.messages))
        await upkeep.tick()  # on record while it streams
        assert await redis_client.hlen(records) == 1
        outcome = await task
        assert outcome.outcome == "ok"
        assert await redis_client.hlen(records) == 0
    finally:
        await upkeep.stop()
