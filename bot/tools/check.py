"""`check`'s lines for MCP_CONFIG: one per server, reachable with how many tools, or what is wrong."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.config import Settings
from bot.ops.problems import CheckFailed
from bot.tools.config import ServerSpec
from bot.tools.servers import ToolServer

CHECK_WAIT = 15.0  # seconds for one server to start, answer and list its tools

ToolCheck = Callable[[Settings], Awaitable[str]]


def tool_checks(settings: Settings) -> list[tuple[str, ToolCheck]]:
    """One per server of MCP_CONFIG (a file that cannot be used fails the settings' line)."""

    def one(spec: ServerSpec) -> ToolCheck:
        async def check(settings: Settings) -> str:
            server = ToolServer(spec)
            server.start()
            try:
                if not await server.wait_ready(CHECK_WAIT):
                    raise CheckFailed(f"{spec.command or spec.url} is not reachable: {server.error}")
                approval = "" if spec.approve == "never" else f", approve: {spec.approve}"
                return f"reachable ({spec.transport}), {len(server.tools)} tools{approval}"
            finally:
                await server.stop()

        return check

    return [(f"tool server {spec.name}", one(spec)) for spec in settings.tools.servers]
