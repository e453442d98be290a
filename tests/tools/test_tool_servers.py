"""The MCP sessions against real SDK-built servers, over stdio and streamable HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.tools.config import ServerSpec
from bot.tools.servers import ToolServer, ToolServers, ToolUnavailable
from tests.support.helpers import free_port, wait_until
from tests.tools.servers import http_server, kill, start_http, stdio_spec


async def test_stdio_server_lists_its_tools_and_answers_a_call() -> None:
    servers = ToolServers([stdio_spec(tools=frozenset({"lookup_order", "refund"}))])
    await servers.start()
    try:
        tools = {t.qualified: t for t in servers.offered(["orders"])}
        assert set(tools) == {"orders__lookup_order", "orders__refund"}  # the allow-list holds
        assert tools["orders__lookup_order"].read_only and not tools["orders__refund"].read_only
        assert tools["orders__lookup_order"].title == "Looking up an order"
        assert tools["orders__lookup_order"].schema["required"] == ["order_id"]
        out = await servers.servers["orders"].call("lookup_order", {"order_id": "A-1"}, timeout=10)
        assert out.text == "Order A-1: shipped, arriving Tuesday" and not out.is_error
        assert servers.status_lines() == ["orders (stdio): up, 2 tools"]
    finally:
        await servers.stop()
    assert not servers.servers["orders"].up


async def test_http_server_lists_and_answers() -> None:
    async with http_server() as url:
        servers = ToolServers([ServerSpec(name="web", url=url)])
        await servers.start()
        try:
            assert "web__loud" in {t.qualified for t in servers.offered(["web"])}
            out = await servers.servers["web"].call("lookup_order", {"order_id": "B-2"}, timeout=10)
            assert out.text.startswith("Order B-2")
        finally:
            await servers.stop()


async def test_a_server_down_at_start_offers_nothing_and_check_says_why() -> None:
    servers = ToolServers([
        ServerSpec(name="gone", command="/nonexistent/mcp-server"),
        ServerSpec(name="nobody", url="http://127.0.0.1:9/mcp"),
        stdio_spec(),
    ])
    await servers.start(wait=15)
    try:
        assert {t.server for t in servers.offered(["gone", "nobody", "orders"])} == {"orders"}
        lines = servers.status_lines()
        assert lines[0].startswith("gone (stdio /nonexistent/mcp-server): down: ")
        assert lines[1].startswith("nobody (http http://127.0.0.1:9/mcp): down: ")
        with pytest.raises(ToolUnavailable):
            await servers.servers["gone"].call("x", {}, timeout=1)
    finally:
        await servers.stop()


@pytest.fixture
async def orders() -> AsyncIterator[ToolServer]:
    """The stdio test server, up, stopped after the test."""
    servers = ToolServers([stdio_spec()])
    await servers.start()
    try:
        yield servers.servers["orders"]
    finally:
        await servers.stop()


async def test_a_call_over_its_timeout_raises_and_the_session_survives(orders: ToolServer) -> None:
    with pytest.raises(TimeoutError):
        await orders.call("slow", {"seconds": 30}, timeout=0.3)
    assert (await orders.call("lookup_order", {"order_id": "C"}, timeout=10)).text.startswith("Order C")


async def test_a_child_that_dies_mid_call_is_restarted(orders: ToolServer) -> None:
    with pytest.raises(ToolUnavailable):
        await orders.call("crash", {}, timeout=10)
    await wait_until(lambda: orders.up and orders.connects == 2, timeout=20)
    assert (await orders.call("lookup_order", {"order_id": "D"}, timeout=10)).text.startswith("Order D")


async def test_a_tool_error_is_a_result_not_an_outage(orders: ToolServer) -> None:
    out = await orders.call("lookup_order", {}, timeout=10)  # a missing argument
    assert out.is_error and orders.up


async def test_the_tools_are_listed_again_when_they_change(orders: ToolServer) -> None:
    assert "grown" not in {t.name for t in orders.tools}
    assert (await orders.call("grow", {}, timeout=10)).text == "grew"
    await wait_until(lambda: "grown" in {t.name for t in orders.tools}, timeout=10)


async def test_an_http_session_reconnects_after_its_server_comes_back() -> None:
    port = free_port()
    first = await start_http(port)
    servers = ToolServers([ServerSpec(name="web", url=f"http://127.0.0.1:{port}/mcp")])
    await servers.start()
    server = servers.servers["web"]
    second = None
    try:
        assert server.up
        await kill(first)
        assert server.connects == 1
        with pytest.raises(ToolUnavailable):  # the call finds it gone, and the session is dropped
            await server.call("lookup_order", {"order_id": "R"}, timeout=10)
        second = await start_http(port)
        await wait_until(lambda: server.up and server.connects == 2, timeout=40)
        out = await server.call("lookup_order", {"order_id": "R"}, timeout=10)
        assert out.text.startswith("Order R")
    finally:
        await servers.stop()
        if second is not None:
            await kill(second)
