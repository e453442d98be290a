"""The tool tests' MCP servers: the SDK-built `tests.fakes.mcp_server`, over stdio or HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from bot.tools.config import ServerSpec
from tests.support.helpers import free_port, wait_until

ROOT = str(Path(__file__).resolve().parents[2])


def stdio_spec(name: str = "orders", **kwargs: object) -> ServerSpec:
    return ServerSpec(name=name, command=sys.executable, args=("-m", "tests.fakes.mcp_server"), cwd=ROOT,
                      **kwargs)  # type: ignore[arg-type]


def config_file(directory: Path, others: dict[str, object] | None = None, **entry: object) -> str:
    """An MCP_CONFIG naming the stdio test server `orders` (with `entry`'s settings), and `others`."""
    config = {"mcpServers": {"orders": {
        "command": sys.executable, "args": ["-m", "tests.fakes.mcp_server"], "cwd": ROOT, **entry,
    }, **(others or {})}}
    path = directory / "mcp.json"
    path.write_text(json.dumps(config))
    return str(path)


def tool_settings(directory: Path) -> dict[str, str]:
    """The settings that configure the test server and allow every channel its tools."""
    return {"MCP_CONFIG": config_file(directory), "BOT_TOOLS": "all"}


def tool_env(env: dict[str, str], directory: Path) -> dict[str, str]:
    return env | tool_settings(directory)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def start_http(port: int) -> asyncio.subprocess.Process:
    """The server over streamable HTTP on `port`, in its own process, once it listens."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.mcp_server", "http", str(port), cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    await wait_until(lambda: _listening(port), timeout=20.0, interval=0.05)
    return process


async def kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.wait()


@contextlib.asynccontextmanager
async def http_server() -> AsyncIterator[str]:
    """The server over streamable HTTP, in its own process; yields its URL."""
    port = free_port()
    process = await start_http(port)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        await kill(process)
