"""The tool loop in the pipeline, end to end: the fake model streaming tool calls in the
OpenAI/Together shape, a real SDK-built MCP server over stdio, real Redis, a recording surface."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.engine import Engine
from bot.ops import metrics
from bot.tools.loop import LIMIT_NOTE, LIMIT_RESULT, NO_TOOLS_NOTE, STEPS_NOTE
from tests.fakes.llm import Answer, FakeLLM
from tests.support.cli import run_cli
from tests.support.clock import FastClock
from tests.support.core import ALICE, conversation, turn
from tests.support.helpers import wait_until
from tests.support.surfaces import RecordingSurface
from tests.tools.servers import config_file


@pytest.fixture
def tool_env(engine_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    path = config_file(tmp_path, timeout=2)
    return engine_env | {"MCP_CONFIG": path, "BOT_TOOLS": "all", "TOOL_MAX_STEPS": "3"}


@pytest.fixture
async def tool_engine(tool_env: dict[str, str], clock: FastClock) -> AsyncIterator[Engine]:
    async with open_engine(load_settings(tool_env, dotenv=False), clock) as engine:
        yield engine


def calls_then(calls: list[tuple[str, str]], answer: Callable[[str], str]) -> Callable[[str], Answer]:
    """The model: on the question, these calls; on the tool results (the last message), text."""
    def script(asked: str) -> Answer:
        if asked.startswith("Alice:"):
            return Answer(tokens=[], tool_calls=calls)
        return Answer.of(answer(asked))
    return script


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


async def test_a_read_only_call_is_shown_and_answered(tool_engine: Engine, fake_llm: FakeLLM) -> None:
    metrics.reset()
    fake_llm.script = calls_then([("orders__lookup_order", '{"order_id": "A-1001"}')],
                                 lambda result: f"It says: {result}")
    surface = RecordingSurface()
    outcome = await tool_engine.answer(turn("where is order A-1001?", surface=surface))
    assert outcome.outcome == "ok"
    offered = {t["function"]["name"] for t in fake_llm.requests[0]["tools"]}
    # A write needs the asker's Approve, which a surface without buttons cannot ask: not offered.
    assert "orders__lookup_order" in offered and "orders__refund" not in offered
    assert tool_messages(fake_llm.requests[1])[0]["content"] == "Order A-1001: shipped, arriving Tuesday"
    assert fake_llm.requests[1]["messages"][-2]["tool_calls"][0]["function"]["name"] == "orders__lookup_order"
    assert surface.text == (
        "_Looking up an order (A-1001)… done_\n\nIt says: Order A-1001: shipped, arriving Tuesday"
    )
    registry = metrics.current().registry
    labels = {"server": "orders", "tool": "lookup_order"}
    assert registry.get_sample_value("chatbot_tool_calls_total", labels | {"outcome": "ok"}) == 1
    assert registry.get_sample_value("chatbot_tool_seconds_count", labels) == 1


async def test_two_calls_run_in_parallel(tool_engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.script = calls_then(
        [("orders__slow", '{"seconds": 1.0}'), ("orders__slow", '{"seconds": 1.0}')], lambda r: "both")
    surface = RecordingSurface()
    await tool_engine.answer(turn("two slow things", surface=surface))
    results = tool_messages(fake_llm.requests[1])
    assert [m["content"] for m in results] == ["slow done", "slow done"]
    assert len({m["tool_call_id"] for m in results}) == 2
    # In parallel: the thread showed both running at once, then both done.
    running = "_slow (1.0)…_\n_slow (1.0)…_"
    assert any(w.text.startswith(running) for w in surface.writes)
    assert surface.text.startswith("_slow (1.0)… done_\n_slow (1.0)… done_\n\nboth")


async def test_a_huge_result_is_cut_with_a_note(tool_engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.script = calls_then([("orders__big", '{"chars": 1000000}')], lambda r: "long one")
    await tool_engine.answer(turn("big please"))
    content = tool_messages(fake_llm.requests[1])[0]["content"]
    assert content.startswith("x" * 16_000) and "the result was 1,000,000 characters" in content
    assert len(content) < 16_200


async def test_a_result_that_tries_to_broadcast_reaches_the_model_as_text(
    tool_engine: Engine, fake_llm: FakeLLM
) -> None:
    fake_llm.script = calls_then([("orders__loud", "{}")], lambda r: r)
    surface = RecordingSurface()
    await tool_engine.answer(turn("be loud", surface=surface))
    # The core passes it on as text; the platforms defuse it (tests/slack, tests/discord).
    assert "<!channel>" in tool_messages(fake_llm.requests[1])[0]["content"]


async def test_a_tool_not_offered_gets_an_error_result(tool_engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.script = calls_then([("orders__refund", '{"order_id": "A"}')], lambda r: "could not")
    surface = RecordingSurface()
    await tool_engine.answer(turn("refund it", surface=surface))
    assert "no tool named 'orders__refund'" in tool_messages(fake_llm.requests[1])[0]["content"]
    assert "not offered" in surface.text


async def test_the_step_budget_ends_with_a_question_without_tools(
    tool_engine: Engine, fake_llm: FakeLLM
) -> None:
    def script(asked: str) -> Answer:
        if asked.startswith("(The tool budget"):
            return Answer.of("what I have")
        return Answer(tokens=[], tool_calls=[("orders__lookup_order", '{"order_id": "L"}')])
    fake_llm.script = script
    surface = RecordingSurface()
    await tool_engine.answer(turn("loop forever", surface=surface))
    assert len(fake_llm.requests) == 4  # TOOL_MAX_STEPS=3 rounds of calls, then one without tools
    assert "tools" not in fake_llm.requests[3]
    assert surface.text.endswith("what I have\n\n" + STEPS_NOTE.format(n=3))


async def test_a_call_over_its_timeout(tool_engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.script = calls_then([("orders__slow", '{"seconds": 20}')], lambda r: "too slow")
    surface = RecordingSurface()
    await tool_engine.answer(turn("slow", surface=surface))
    assert tool_messages(fake_llm.requests[1])[0]["content"] == "error: the tool did not answer within 2 s."
    assert "_slow (20)… timed out_" in surface.text and surface.text.endswith("too slow")


async def test_a_server_crashing_mid_call_never_fails_the_answer(
    tool_engine: Engine, fake_llm: FakeLLM
) -> None:
    fake_llm.script = calls_then([("orders__crash", "{}")], lambda r: "it broke")
    surface = RecordingSurface()
    outcome = await tool_engine.answer(turn("crash it", surface=surface))
    assert outcome.outcome == "ok" and surface.text.endswith("it broke")
    assert "unavailable" in tool_messages(fake_llm.requests[1])[0]["content"]


async def test_a_follow_up_knows_the_previous_tool_result(tool_engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.script = calls_then([("orders__lookup_order", '{"order_id": "F-7"}')], lambda r: "found it")
    await tool_engine.answer(turn("where is F-7?"))
    fake_llm.script = lambda asked: Answer.of("ok")
    await tool_engine.answer(turn("and when does it arrive?"))
    assistant = [m for m in fake_llm.requests[-1]["messages"] if m["role"] == "assistant"][-1]
    assert "Order F-7: shipped, arriving Tuesday" in assistant["content"]
    assert assistant["content"].endswith("found it")


async def test_a_channel_with_tools_off_is_offered_none(tool_engine: Engine, fake_llm: FakeLLM) -> None:
    scope = conversation().channel_scope
    said = await tool_engine.command("/persona tools off", scope=scope, conversation=None, actor=ALICE,
                                     can_admin=True)
    assert "tools is now `off`" in said
    shown = await tool_engine.command("/persona show", scope=scope, conversation=None, actor=ALICE,
                                      can_admin=False)
    assert "• tools: off" in shown
    await tool_engine.answer(turn("anything"))
    assert "tools" not in fake_llm.requests[-1]
    refused = await tool_engine.command("/persona tools elsewhere", scope=scope, conversation=None,
                                        actor=ALICE, can_admin=True)
    assert "There is no tool server `elsewhere`" in refused
    await tool_engine.command("/persona tools orders", scope=scope, conversation=None, actor=ALICE,
                              can_admin=True)
    shown = await tool_engine.command("/persona show", scope=scope, conversation=None, actor=ALICE,
                                      can_admin=False)
    assert "`orders`: `lookup_order`, `refund` (needs approval)" in shown


async def test_a_provider_refusing_tools_gets_the_question_without_them(
    tool_engine: Engine, fake_llm: FakeLLM
) -> None:
    fake_llm.without(tool_engine.settings.model.model, "tools")
    fake_llm.answer = Answer.of("plain answer")
    surface = RecordingSurface()
    await tool_engine.answer(turn("hello", surface=surface))
    assert "tools" in fake_llm.requests[0] and "tools" not in fake_llm.requests[-1]
    assert surface.text == "plain answer\n\n" + NO_TOOLS_NOTE


async def test_stop_during_a_call_cancels_it(tool_engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.script = calls_then([("orders__slow", '{"seconds": 1.5}')], lambda r: "never")
    surface = RecordingSurface()
    asked = turn("slow then stop", surface=surface)
    answering = asyncio.create_task(tool_engine.answer(asked))
    await wait_until(lambda: any("_slow (1.5)…_" in w.text for w in surface.writes), timeout=10)
    pressed = await tool_engine.stop(asked.answer_id, ALICE, can_admin=False)
    outcome = await answering
    assert pressed.done and outcome.outcome == "stopped"
    assert len(fake_llm.requests) == 1  # the result never went back to the model
    assert surface.text.startswith("_slow (1.5)… stopped_")
    assert tool_engine.tools.servers["orders"].up  # the server lives on


async def test_check_prints_one_line_per_server(engine_env: dict[str, str], tmp_path: Path) -> None:
    path = config_file(tmp_path)
    code, out, _ = await run_cli(["check"], engine_env | {"MCP_CONFIG": path})
    assert code == 0 and "ok   tool server orders: reachable (stdio), 7 tools, approve: writes" in out
    broken = tmp_path / "broken.json"
    broken.write_text('{"mcpServers": {"gone": {"command": "/nonexistent/server"}}}')
    code, out, _ = await run_cli(["check"], engine_env | {"MCP_CONFIG": str(broken)})
    assert code == 1 and "FAIL tool server gone: /nonexistent/server is not reachable: " in out


async def test_usage_counts_tool_calls(
    tool_engine: Engine, fake_llm: FakeLLM, tool_env: dict[str, str]
) -> None:
    fake_llm.script = calls_then(
        [("orders__lookup_order", '{"order_id": "U"}'), ("orders__loud", "{}")], lambda r: "counted")
    outcome = await tool_engine.answer(turn("count my calls"))
    assert outcome.tool_calls == 2
    code, out, err = await run_cli(["usage", "--days", "1"], tool_env)
    assert code == 0, err
    assert "tool calls" in out.splitlines()[2]
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split()[-1] == "2"
    # Per persona (none set: the default preset) and per server, the unknown tool on its own row.
    fake_llm.script = calls_then([("orders__lookup_order", '{"order_id": "V"}'), ("nowhere__x", "{}")],
                                 lambda r: "again")
    await tool_engine.answer(turn("count my calls", thread="t2"))
    code, out, err = await run_cli(["usage", "--days", "1"], tool_env)
    assert code == 0, err
    lines = out.splitlines()
    persona = lines[next(i for i, line in enumerate(lines) if line.startswith("persona")) + 2]
    assert persona.split()[0] == "default" and persona.split()[1] == "2" and persona.split()[-1] == "4"
    servers = lines[next(i for i, line in enumerate(lines) if line.startswith("tool server")):]
    assert servers[2].split() == ["orders", "3"]
    assert servers[3].split() == ["(no", "such", "tool)", "1"]


async def test_a_server_down_at_start_only_takes_its_tools_away(
    engine_env: dict[str, str], fake_llm: FakeLLM, clock: FastClock, tmp_path: Path
) -> None:
    path = config_file(tmp_path, {"gone": {"command": "/nonexistent/mcp-server"}})
    env = engine_env | {"MCP_CONFIG": path, "BOT_TOOLS": "all"}
    async with open_engine(load_settings(env, dotenv=False), clock) as engine:
        fake_llm.answer = Answer.of("still here")
        surface = RecordingSurface()
        outcome = await engine.answer(turn("anything", surface=surface))
        assert outcome.outcome == "ok" and surface.text == "still here"
        assert {t["function"]["name"].split("__")[0] for t in fake_llm.requests[0]["tools"]} == {"orders"}
        shown = await engine.command("/persona show", scope=conversation().channel_scope, conversation=None,
                                     actor=ALICE, can_admin=False)
        assert "`gone`: unavailable right now" in shown


async def test_tool_steps_count_against_the_askers_rate_limit(
    tool_env: dict[str, str], fake_llm: FakeLLM, clock: FastClock
) -> None:
    """Each round of calls counts like a message; once the limit is reached mid-answer the model
    is told so in the calls' results and answers without tools; the next message is refused."""
    def script(asked: str) -> Answer:
        if asked.startswith("error: the person's limit"):
            return Answer.of("what I found so far")
        return Answer(tokens=[], tool_calls=[("orders__lookup_order", '{"order_id": "R"}')])
    fake_llm.script = script
    limited = {"USER_MESSAGES_PER_MINUTE": "2", "TOOL_MAX_STEPS": "5"}
    settings = load_settings(tool_env | limited, dotenv=False)
    async with open_engine(settings, clock) as engine:
        surface = RecordingSurface()
        outcome = await engine.answer(turn("look it up again and again", surface=surface))
        assert outcome.outcome == "ok"
        # The message is 1, the first round 2: the second round is not run.
        assert outcome.tool_calls == 1 and len(fake_llm.requests) == 3
        refused = tool_messages(fake_llm.requests[2])[-1]["content"]
        assert refused == LIMIT_RESULT
        assert "tools" not in fake_llm.requests[2]
        assert surface.text.endswith("what I found so far\n\n" + LIMIT_NOTE)

        told = RecordingSurface()  # the refused step was not counted: the next message is told
        assert (await engine.answer(turn("more", thread="t2", surface=told))).error == "user_rate"
        assert "up to 2 messages a minute" in told.text
        assert len(fake_llm.requests) == 3


async def test_without_a_rate_limit_tool_steps_are_not_counted(
    tool_engine: Engine, fake_llm: FakeLLM, redis_client: Any, redis_prefix: str
) -> None:
    fake_llm.script = calls_then([("orders__lookup_order", '{"order_id": "N"}')], lambda r: "fine")
    assert (await tool_engine.answer(turn("no limit here"))).tool_calls == 1
    assert not await redis_client.keys(f"{redis_prefix}:rate:*")
