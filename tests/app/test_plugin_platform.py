"""A platform from another package: registered only through the entry-point group
`chatbot.platforms`, as a third party would register one, with no edit to `bot/` or `adapters/`.

The platform (`tests/plugin_platform`, "loopback": JSON lines over a local socket) is made
known to the bot process by a `*.dist-info` written into a temporary directory on its
PYTHONPATH, which is what installing a package does. Then `python -m bot run` answers a
conversation through it (the fake model behind), `/readyz` shows its connection, and
`python -m bot check` lists its line; without the dist-info, nothing of it appears.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path

import aiohttp
import pytest

from bot.config import load_settings
from bot.platforms import enabled, secrets
from tests.fakes.llm import Answer, FakeLLM
from tests.plugin_platform import USER
from tests.plugin_platform import platform as loopback
from tests.support.cli import cli_process
from tests.support.helpers import ROOT, bot_process, free_port, until_ready

pytestmark = pytest.mark.real_time

TOKEN = "loopback-" + "secret-token"


def registered(directory: Path) -> str:
    """The PYTHONPATH of a bot process that has the loopback platform "installed"."""
    dist = directory / "chatbot_loopback-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: chatbot-loopback\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[chatbot.platforms]\nloopback = tests.plugin_platform:platform\n")
    return os.pathsep.join((str(directory), str(ROOT)))


async def ask(port: int, **request: str) -> dict[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(json.dumps({"key": TOKEN, **request}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 30)
    finally:
        writer.close()
    answer: dict[str, str] = json.loads(line)
    return answer


async def readiness(port: int) -> tuple[int, dict[str, object]]:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as reply,
        ):
            return reply.status, await reply.json()
    except (aiohttp.ClientError, TimeoutError):
        return 0, {}


async def test_run_answers_a_conversation_through_a_plugged_in_platform(
    engine_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path
) -> None:
    fake_llm.answer = Answer.words(6, tag="loop")
    port, health = free_port(), free_port()
    env = engine_env | {
        "PYTHONPATH": registered(tmp_path), "LOOPBACK_PORT": str(port), "LOOPBACK_TOKEN": TOKEN,
        "HEALTH_PORT": str(health), "LOG_LEVEL": "DEBUG",
    }
    async with bot_process("-m", "bot", "run", env=env) as process:

        async def ready() -> bool:
            return (await readiness(health))[0] == 200

        await until_ready(process, ready)
        _, report = await readiness(health)
        assert report["checks"] == {"redis": "ok", "loopback": "ok"}

        first = await ask(port, conversation="c1", id="m1", text="hello over the loopback")
        assert first == {"id": "m1", "answer": fake_llm.answer.text}
        second = await ask(port, conversation="c1", id="m2", text="and again")
        assert second["answer"] == fake_llm.answer.text
        # The same conversation: the model saw the first exchange with the second question.
        contents = [m["content"] for m in fake_llm.requests[-1]["messages"]]
        said = f"{USER.name}: "  # the core names who spoke, on every platform
        assert contents[-3:] == [said + "hello over the loopback", fake_llm.answer.text, said + "and again"]
        assert await ask(port, conversation="c1", id="m1", text="a retry") == {
            "id": "m1", "refused": "already answered",  # claimed once, like any platform's events
        }
        assert (await ask(port, conversation="c1", id="m3", text="x", key="wrong"))["refused"]

        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    assert "loopback started" in err.decode()
    assert '"text": "and again"' in err.decode()  # the request's log line, its token redacted:
    assert TOKEN not in err.decode()


async def test_check_lists_the_plugged_in_platform_only_when_it_is_registered(
    engine_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path
) -> None:
    port = free_port()
    env = engine_env | {"LOOPBACK_PORT": str(port), "LOOPBACK_TOKEN": TOKEN}
    installed = {"PYTHONPATH": registered(tmp_path)}
    code, out, _ = await cli_process(["check"], env | installed)
    assert code == 0, out
    assert f"platforms enabled: loopback (loopback on 127.0.0.1:{port})" in out
    assert f"ok   loopback: port {port} free on 127.0.0.1" in out

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        code, out, _ = await cli_process(["check"], env | installed)
        assert code == 1
        assert f"FAIL loopback: LOOPBACK_PORT={port} is taken on 127.0.0.1" in out
        code, _, err = await cli_process(
["run"], env | installed | {"HEALTH_PORT": str(free_port())})
        assert code == 1  # the platform's own words for its failure to start
        assert err.strip().splitlines()[-1].startswith(f"LOOPBACK_PORT={port} cannot be served")

    code, out, _ = await cli_process(["check"], env)  # not installed: the bot knows nothing of it
    assert code == 0 and "loopback" not in out
    assert "platforms enabled: none" in out and "LOOPBACK_PORT" not in out


async def test_its_settings_problems_and_secrets_go_where_the_core_puts_them(
    engine_env: dict[str, str], tmp_path: Path
) -> None:
    settings = load_settings(engine_env | {"LOOPBACK_PORT": "7000", "LOOPBACK_TOKEN": TOKEN}, dotenv=False)
    on = enabled(settings, [loopback])
    assert [p.name for p in on] == ["loopback"]
    assert TOKEN in secrets(settings, on)  # redacted from every log line
    assert enabled(load_settings(engine_env, dotenv=False), [loopback]) == []

    installed = {"PYTHONPATH": registered(tmp_path)}
    short = engine_env | installed | {"LOOPBACK_PORT": "7000", "LOOPBACK_TOKEN": "short"}
    code, out, _ = await cli_process(["check"], short)
    assert code == 1
    assert "FAIL settings: LOOPBACK_TOKEN is shorter than 8 characters" in out
    code, _, err = await cli_process(["run"], short | {"LOOPBACK_PORT": "many"})
    assert code == 2
    assert "LOOPBACK_PORT='many' is not valid: expected a whole number" in err
