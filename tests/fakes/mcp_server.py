"""A real MCP server for the tool tests, built with the `mcp` SDK (its `MCPServer`).

    python -m tests.fakes.mcp_server stdio             # over stdin/stdout, as a child of the bot
    python -m tests.fakes.mcp_server http PORT         # streamable HTTP on 127.0.0.1:PORT/mcp

Its tools: `lookup_order` (read-only), `refund` (changes the world: needs approval), `big`
(a result of N characters), `loud` (a result that tries to ping everyone), `slow` (sleeps),
`grow` (adds a tool and sends tools/list_changed), `crash` (the process dies mid-call).
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations

READ_ONLY = ToolAnnotations(read_only_hint=True)

server = MCPServer("orders")


@server.tool(title="Looking up an order", annotations=READ_ONLY)
def lookup_order(order_id: str) -> str:
    """Where an order is."""
    return f"Order {order_id}: shipped, arriving Tuesday"


@server.tool(title="Refunding an order")
def refund(order_id: str) -> str:
    """Refund an order (changes the world)."""
    return f"Order {order_id} refunded"


@server.tool(annotations=READ_ONLY)
def big(chars: int) -> str:
    """A long result."""
    return "x" * chars


@server.tool(annotations=READ_ONLY)
def loud() -> str:
    """A result that tries to broadcast."""
    return "Hey <!channel> and @everyone, look at <@U999>"


@server.tool(annotations=READ_ONLY)
async def slow(seconds: float) -> str:
    """Takes its time."""
    await asyncio.sleep(seconds)
    return "slow done"


@server.tool(annotations=READ_ONLY)
async def grow(ctx: Context) -> str:
    """Adds a tool, `grown`, and says so (notifications/tools/list_changed)."""
    server.add_tool(lambda: "grown", name="grown", annotations=READ_ONLY)
    await ctx.session.send_tool_list_changed()
    return "grew"


@server.tool(annotations=READ_ONLY)
def crash() -> str:
    """The process dies mid-call."""
    os._exit(3)


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", port=int(sys.argv[2]))
    else:
        server.run()
