"""`python -m bot chat` on a real terminal (a pty): Markdown, streaming in place, Ctrl-C and Ctrl-D.

These stay real processes: the pty is the chat's controlling terminal, Ctrl-C reaches it as
SIGINT, and only a main thread can take signals (tests/cli.py runs the command on another)."""

from __future__ import annotations

import sys

import pytest

from tests.fakes.llm import Answer, FakeLLM
from tests.helpers import ROOT, clean_environ
from tests.terminal import Terminal

# The bot under test runs in a process of its own, on the wall clock (tests/clock.py).
pytestmark = pytest.mark.real_time


def chat_env(engine_env: dict[str, str], **extra: str) -> dict[str, str]:
    return clean_environ() | {"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "LLM_MAX_RETRIES": "0"} \
        | engine_env | extra


def chat(*args: str) -> list[str]:
    return [sys.executable, "-m", "bot", "chat", *args]


async def test_markdown_streams_and_ctrl_c_stops_the_answer_not_the_chat(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer(
        tokens=["Here is **bold** and `code_name`:", *(f" w{i}" for i in range(1, 400))],
        tokens_per_second=20,
    )
    async with Terminal(chat(), chat_env(engine_env), ROOT / "tests" / "data") as term:
        await term.expect("Ctrl-D quits")
        await term.expect("> ")
        term.type("hello\r")
        await term.expect("w3 ")  # streaming: the first words show long before the last
        assert "Here is bold and code_name:" in term.text  # rendered, not raw Markdown
        assert "**bold**" not in term.text
        term.type("\x03")  # Ctrl-C mid-answer
        shown = await term.expect("(stopped)")
        await term.expect("> ")
        assert "w399" not in shown  # it stopped early
        assert "restarting" not in term.text and "_(" not in term.text

        # The chat goes on; Ctrl-C at the idle prompt answers at once (no Enter needed) and says
        # how to quit; a second one quits.
        fake_llm.answer = Answer.of("Second answer.")
        term.type("again\r")
        await term.expect("Second answer.")
        await term.expect("> ")
        # The stopped answer was kept in the conversation, marked stopped for the model.
        kept = [m["content"] for m in fake_llm.requests[1]["messages"] if m["role"] == "assistant"]
        assert len(kept) == 1 and kept[0].startswith("Here is **bold**")
        assert "stopped this answer" in kept[0] and "w399" not in kept[0]

        # `/stop` and Enter while an answer streams stops it the same way.
        fake_llm.answer = Answer(tokens=["Third", *(f" t{i}" for i in range(1, 400))], tokens_per_second=20)
        term.type("third\r")
        await term.expect("t3 ")
        term.type("/stop\r")
        shown = await term.expect("(stopped)")
        await term.expect("> ")
        assert "t399" not in shown

        term.type("\x03")
        await term.expect("press Ctrl-C again or Ctrl-D", within=5)
        term.type("\x03")
        assert await term.exit_code() == 0
    assert len(fake_llm.requests) == 3


async def test_ctrl_d_quits_and_errors_name_the_url_on_their_own_line(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.fail_next("503")
    async with Terminal(chat(), chat_env(engine_env), ROOT / "tests" / "data") as term:
        await term.expect("> ")
        term.type("hello\r")
        await term.expect("unavailable right now (503)")
        await term.expect(f"tried {fake_llm.url}/chat/completions")
        await term.expect("> ")
        # The engine's log line is on a line of its own, not glued onto the answer.
        log_lines = [line for line in term.text.splitlines() if "model API error" in line]
        assert log_lines and all(line.lstrip()[:4].isdigit() for line in log_lines), term.text
        term.type("\x04")  # Ctrl-D
        assert await term.exit_code() == 0


async def test_fake_model_needs_no_key_and_no_redis(tmp_path: object) -> None:
    env = chat_env({}, REDIS_URL="", TOGETHER_API_KEY="")
    async with Terminal(chat("--fake", "--thread", "t1"), env, ROOT) as term:
        await term.expect("Using the fake model at http://127.0.0.1:")
        await term.expect("REDIS_URL is not set")
        await term.expect("without Redis this conversation cannot be continued later")
        await term.expect("> ")
        term.type("hi\r")
        await term.expect("talk to a real model.")
        assert "**fake model**" not in term.text and "fake model from tests/fakes/llm.py" in term.text
        term.type("\x04")
        assert await term.exit_code() == 0
