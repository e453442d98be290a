"""Benchmark of the tool loop: the bot's own overhead per step, and many conversations calling
tools at once.

The engine on the real Redis; the fake model (unpaced) streaming tool calls in the
OpenAI/Together shape, in its own process (`--in-process`: in the bot's, sharing its event loop);
the SDK-built MCP server (`tests/fakes/mcp_server.py`) over stdio as the bot's child; each answer
on a recording surface paced like Slack's edits (one a second).
N conversations ask at once; in each, the model calls `lookup_order` three times in a row (one
call per step), then answers with a text naming the conversation. Per step:

- call → sent: the tool call complete in the model's stream (the fake wrote its last chunk) →
  the MCP call sent (`ToolServer.call` entered)
- result → next: the MCP result back → the next model request arrived at the fake
- own overhead: the two together (the bot's share of a step; the model and the tool excluded)
- call → visible: the call sent → the first write of the answer showing that step

Then: answers exact (the final text is the steps and the conversation's own words), and writes
refused with 429 (the recording surface refuses none: the platform budgets are benchmarked
in bench/slack_bench.py and bench/discord_bench.py).

    python bench/tools_bench.py                    # 20 conversations x 3 calls
    python bench/tools_bench.py --conversations 50
    python bench/tools_bench.py --in-process      # the fake model in the bot's process

Prints a Markdown table (p50 / p95 in ms). Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from common import delete_prefix, free_port, ms, table

from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.contract import Author, ConversationKey, SurfaceLimits, Turn
from bot.tools.servers import ToolOutput, ToolServer
from tests.fakes.llm import Answer, FakeLLM
from tests.support.surfaces import RecordingSurface

REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = str(Path(__file__).resolve().parents[1])
STEPS = 3
ORDER = re.compile(r"Order (c\d+)-s(\d+):")


def script(asked: str) -> Answer:
    """The model: a question → the first call; the result of step k → the next, then the text."""
    found = ORDER.search(asked)
    if found is None:
        first = f"{asked.split()[-1]}-s0"
        return Answer(tokens=[], tool_calls=[("orders__lookup_order", json.dumps({"order_id": first}))])
    conversation, step = found.group(1), int(found.group(2))
    if step + 1 < STEPS:
        order = f"{conversation}-s{step + 1}"
        return Answer(tokens=[], tool_calls=[("orders__lookup_order", json.dumps({"order_id": order}))])
    return Answer.of(f"All three orders of {conversation} are on their way.")


@contextlib.asynccontextmanager
async def model_server(in_process: bool) -> AsyncIterator[tuple[str, list[Any]]]:
    """The fake model's URL, and (filled in at the end) its streams' records."""
    streams: list[Any] = []
    if in_process:
        async with FakeLLM() as llm:
            llm.script = script
            yield llm.url, streams
            streams.extend(llm.streams)
        return
    process, port = await asyncio.to_thread(start_model)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        yield url, streams
        async with httpx.AsyncClient() as client:  # monotonic times compare across processes on Linux
            logs = (await client.get(f"http://127.0.0.1:{port}/_streams")).json()
        streams.extend(SimpleNamespace(**log) for log in logs)
    finally:
        process.terminate()
        process.wait()


def start_model() -> tuple[subprocess.Popen[bytes], int]:
    """The fake model in a process of its own, once it listens."""
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve-model", str(port)], cwd=ROOT,
                               stdout=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.readline()  # it says when it listens
    return process, port


async def serve_model(port: int) -> None:
    async with FakeLLM(port=port) as llm:
        llm.script = script
        print("listening", flush=True)
        await asyncio.Event().wait()


async def run(conversations: int, in_process: bool) -> dict[str, Any]:
    prefix = f"bench-tools-{uuid.uuid4().hex[:8]}"
    calls: dict[str, tuple[float, float]] = {}  # order id -> (sent, returned)
    original = ToolServer.call

    async def timed(self: ToolServer, tool: str, arguments: dict[str, Any], timeout: float) -> ToolOutput:
        sent = time.monotonic()
        try:
            return await original(self, tool, arguments, timeout)
        finally:
            calls[str(arguments.get("order_id"))] = (sent, time.monotonic())

    ToolServer.call = timed  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "mcp.json"
        config.write_text(json.dumps({"mcpServers": {"orders": {
            "command": sys.executable, "args": ["-m", "tests.fakes.mcp_server"], "cwd": ROOT}}}))
        async with model_server(in_process) as (url, streams):
            env = {
                "TOGETHER_API_KEY": "bench", "TOGETHER_BASE_URL": url, "REDIS_URL": REDIS_URL,
                "REDIS_PREFIX": prefix, "BOT_MODEL": "bench/model", "MCP_CONFIG": str(config),
                "BOT_TOOLS": "all",
            }
            try:
                async with open_engine(load_settings(env, dotenv=False)) as engine:
                    surfaces = [
                        RecordingSurface(limits=SurfaceLimits(max_chars=4000, min_edit_interval=1.0))
                        for _ in range(conversations)
                    ]
                    turns = [
                        Turn(ConversationKey("bench", "W1", f"C{n}", "t1"), Author(f"U{n}", "Alice"),
                             f"where are my orders? c{n}", message_id=f"m{n}", surface=surfaces[n])
                        for n in range(conversations)
                    ]
                    started = time.monotonic()
                    outcomes = await asyncio.gather(*(engine.answer(t) for t in turns))
                    wall = time.monotonic() - started
            finally:
                ToolServer.call = original  # type: ignore[method-assign]
                await delete_prefix(REDIS_URL, prefix)
        call_to_sent, result_to_next, own, visible = [], [], [], []
        for n in range(conversations):
            for step in range(STEPS):
                order = f"c{n}-s{step}"
                sent, returned = calls[order]
                asking = f"Order c{n}-s{step - 1}:" if step else f"c{n}"
                stream = next(s for s in streams if s.last_user_message.endswith(asking)
                              or (step and asking in s.last_user_message))
                following = next(s for s in streams if f"Order {order}:" in s.last_user_message)
                assert stream.last_token is not None
                call_to_sent.append(sent - stream.last_token)
                result_to_next.append(following.arrived - returned)
                own.append(call_to_sent[-1] + result_to_next[-1])
                shown = next((w.at for w in surfaces[n].writes if f"({order})" in w.text), None)
                if shown is not None:
                    visible.append(shown - sent)
        exact = sum(
            1 for n, (outcome, surface) in enumerate(zip(outcomes, surfaces, strict=True))
            if outcome.outcome == "ok" and surface.text == "\n".join(
                f"_Looking up an order (c{n}-s{k})… done_" for k in range(STEPS))
            + f"\n\nAll three orders of c{n} are on their way."
        )
        return {
            "call_to_sent": call_to_sent, "result_to_next": result_to_next, "own": own, "visible": visible,
            "exact": exact, "wall": wall, "steps": len(own),
        }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--in-process", action="store_true", help="the fake model in the bot's process")
    parser.add_argument("--serve-model", type=int, help=argparse.SUPPRESS)  # the model's own process
    args = parser.parse_args()
    if args.serve_model:
        await serve_model(args.serve_model)
        return
    result = await run(args.conversations, args.in_process)
    n = args.conversations
    print(table([
        {"what": "call → sent (ms, p50 / p95)", "value": ms(result["call_to_sent"], 1)},
        {"what": "result → next request (ms, p50 / p95)", "value": ms(result["result_to_next"], 1)},
        {"what": "own overhead per step (ms, p50 / p95)", "value": ms(result["own"], 1)},
        {"what": "call sent → step visible (ms, p50 / p95)", "value": ms(result["visible"])},
        {"what": "steps measured", "value": str(result["steps"])},
        {"what": f"answers exact (of {n})", "value": str(result["exact"])},
        {"what": "wall time, every conversation (s)", "value": f"{result['wall']:.2f}"},
        {"what": "writes refused with 429", "value": "0 (recording surface)"},
    ]))


if __name__ == "__main__":
    asyncio.run(main())
