"""`python -m bot chat` on a real terminal (a pty): Markdown, streaming in place, Ctrl-C and Ctrl-D.

These stay real processes: the pty is the chat's controlling terminal, Ctrl-C reaches it as
SIGINT, and only a main thread can take signals (tests/support/cli.py runs the command on another)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.fakes.llm import Answer, FakeLLM
from tests.support.helpers import ROOT, clean_environ
from tests.support.terminal import Terminal
from tests.tools.servers import tool_settings

# The bot under test runs in a process of its own, on the wall clock (tests/support/clock.py).
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
        await term.expect("> ")
        term.type("\x03")
        assert await term.exit_code() == 0
    assert len(fake_llm.requests) == 3


def log_lines(text: str) -> list[str]:
    """Lines of the log's text format (`bot.ops.logs`): never in the chat."""
    return [line for line in text.splitlines() if re.search(r"\b(DEBUG|INFO|WARNING|ERROR)\b", line)]


async def test_ctrl_d_quits_and_an_error_is_one_line_naming_the_fix(
    engine_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path
) -> None:
    fake_llm.fail_next("503")
    env = chat_env(engine_env, XDG_STATE_HOME=str(tmp_path))
    async with Terminal(chat(), env, ROOT / "tests" / "data") as term:
        await term.expect("> ")
        term.type("hello\r")
        await term.expect(f"tried {fake_llm.url}/chat/completions")
        await term.expect("> ")
        screen = term.screen()
        said = [line for line in screen if "unavailable" in line]
        assert len(said) == 1, screen  # one line (soft-wrapped on a narrow terminal) ...
        assert f"(503). Please try again in a moment. (tried {fake_llm.url}" in said[0]  # ... with the fix
        assert log_lines("\n".join(screen)) == [], screen
        term.type("\x04")  # Ctrl-D
        assert await term.exit_code() == 0
    # The log went to its file, where the operator can read it.
    assert "model API error" in (tmp_path / "chatbot" / "chat.log").read_text()


async def test_a_model_failing_mid_answer_is_one_line_and_no_log(
    engine_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path
) -> None:
    fake_llm.answer = Answer(tokens=["First", *(f" m{i}" for i in range(1, 40))], tokens_per_second=200)
    fake_llm.fail_next("cut")
    async with Terminal(chat(), chat_env(engine_env, XDG_STATE_HOME=str(tmp_path)), ROOT) as term:
        await term.expect("> ")
        term.type("hello\r")
        await term.expect("(Interrupted:")
        await term.expect("> ")
        screen = term.screen()
        shown = "\n".join(screen)
        assert "First m1" in shown and "m39" not in shown, screen  # the part that came stays
        notes = [line for line in screen if "Interrupted" in line]
        assert notes == ["(Interrupted: The connection to the model dropped mid-answer.)"], screen
        assert log_lines(shown) == [], screen
        term.type("\x04")
        assert await term.exit_code() == 0


async def test_line_editing_history_and_help(
    engine_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path
) -> None:
    fake_llm.answer = Answer.of("Fine.")
    env = chat_env(engine_env, XDG_STATE_HOME=str(tmp_path))
    async with Terminal(chat(), env, ROOT) as term:
        await term.expect("/help lists the commands and keys")
        await term.expect("> ")
        term.type("helo")
        term.type("\x1b[D")  # left arrow: the cursor goes back over the "o"
        term.type("l\r")
        await term.expect("Fine.")
        await term.expect("> ")
        term.type("\x1b[A")  # up arrow: the line before, to send again
        term.type("\r")
        await term.expect("Fine.")
        await term.expect("> ")
        asked = [r["messages"][-1]["content"] for r in fake_llm.requests]
        assert asked == ["you: hello", "you: hello"], asked

        term.type("/help\r")
        await term.expect("Ctrl-L")
        shown = "\n".join(term.screen())
        for listed in ("/attach PATH", "/stop", "/forget", "/persona help", "Ctrl-C", "Ctrl-D", "Ctrl-R"):
            assert listed in shown, shown
        assert "Unknown command" not in shown
        # A command's reply keeps its lines: one preset a line, not one wrapped paragraph.
        term.type("/persona list\r")
        await term.expect("translator")
        await term.expect("> ")
        screen = term.screen()
        rows = {name: [i for i, line in enumerate(screen) if f"{name}:" in line] for name in
                ("assistant", "concise", "pirate", "reviewer", "sre", "translator")}
        assert all(len(found) == 1 for found in rows.values()), screen
        assert len({found[0] for found in rows.values()}) == 6, screen
        term.type("/stop\r")
        await term.expect("Nothing to stop")
        await term.expect("> ")
        term.type("\x04")
        assert await term.exit_code() == 0
    # The history outlives the chat: the next one's up arrow finds "hello".
    assert "hello" in (tmp_path / "chatbot" / "chat-history").read_text()


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


async def test_tool_steps_are_dim_lines_above_the_answer(
    engine_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path
) -> None:
    """A real stdio MCP server (tests/fakes/mcp_server.py) called from the chat: the step is one
    dim line above the answer on the screen, not italic Markdown inside it."""
    def script(asked: str) -> Answer:
        if asked.startswith("Order A-1001"):
            return Answer.of(f"It says: {asked}")
        return Answer(tokens=[], tool_calls=[("orders__lookup_order", '{"order_id": "A-1001"}')])
    fake_llm.script = script
    env = chat_env(engine_env, **tool_settings(tmp_path))
    async with Terminal(chat(), env, ROOT / "tests" / "data") as term:
        await term.expect("> ")
        term.type("where is A-1001?\r")
        await term.expect("It says: Order A-1001")
        await term.expect("> ")
        screen = term.screen()
        step = screen.index("Looking up an order (A-1001)… done")
        assert screen[step + 1].startswith("It says: Order A-1001: shipped")
        assert "\x1b[2mLooking up an order (A-1001)… done" in term.raw  # dim (SGR 2)
        assert "_Looking" not in term.text
        term.type("\x04")  # Ctrl-D: the chat stops its tool server and quits
        assert await term.exit_code() == 0
