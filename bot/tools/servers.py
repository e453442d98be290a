"""The MCP client sessions: one supervised session per configured server, over the `mcp` SDK.

Each server's session lives in its own task (the SDK's transports are context managers that
must be left in the task that entered them). The task connects, lists the tools, then watches
the session: a ping every `PING_EVERY` seconds, a broken call or a transport error ends it, and it
connects again after a back-off (1 s doubling to 60 s) — a stdio child is started again, an HTTP
session opened again. While a server is down its tools are simply not offered (`ToolServers.offered`).

A stdio child gets the SDK's default environment (PATH, HOME and the like) plus its own `env`
from MCP_CONFIG, never the bot's environment: the platform tokens stay in the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.tools.config import SEPARATOR, ServerSpec

# The SDK is imported where a session needs it, not with this module: it costs about 0.4 s and
# 38 MB, which a bot configured without MCP servers should not pay.
if TYPE_CHECKING:
    import mcp_types as types
    from mcp.client.session import ClientSession, IncomingMessage

log = logging.getLogger(__name__)

PING_EVERY = 15.0  # seconds between liveness pings of an idle session
CONNECT_TIMEOUT = 20.0  # to start, initialise and list one server
FIRST_BACKOFF, MAX_BACKOFF = 1.0, 60.0


@dataclass(frozen=True)
class ToolInfo:
    """One tool a server lists, as the model and the thread see it."""

    server: str
    name: str  # the server's own name for it
    title: str  # its annotated title, else its name: what a step shows
    description: str
    schema: dict[str, Any]
    read_only: bool

    @property
    def qualified(self) -> str:
        return f"{self.server}{SEPARATOR}{self.name}"


class ToolUnavailable(Exception):
    """The call could not be made or finished: the server is down, or it died mid-call."""


@dataclass(frozen=True)
class ToolOutput:
    text: str
    is_error: bool


def _text_of(result: types.CallToolResult) -> str:
    import mcp_types as types

    parts: list[str] = []
    for item in result.content:
        if isinstance(item, types.TextContent):
            parts.append(item.text)
        else:
            parts.append(f"[{item.type} content left out]")
    if not parts and result.structured_content is not None:
        parts.append(str(result.structured_content))
    return "\n".join(parts)


def _short(exc: BaseException) -> str:
    """A one-line reason, for `check` and the logs (never headers or env values)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


class ToolServer:
    """One configured server, kept connected in the background."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.tools: list[ToolInfo] = []
        self.error = "not started"
        self.connects = 0  # sessions opened so far (a restart adds one)
        self._session: ClientSession | None = None
        self._ready = asyncio.Event()
        self._broken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._relists: set[asyncio.Task[None]] = set()

    @property
    def up(self) -> bool:
        return self._session is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"mcp:{self.spec.name}")

    async def wait_ready(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        return self.up

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._session = None

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float) -> ToolOutput:
        """The tool's result; `TimeoutError` past `timeout`, `ToolUnavailable` when the server is
        down or goes away during the call."""
        import mcp_types as types
        from mcp.shared.exceptions import MCPError

        session = self._session
        if session is None:
            raise ToolUnavailable(self.error or "down")
        try:
            async with asyncio.timeout(timeout):
                result = await session.call_tool(tool, arguments)
        except MCPError as exc:
            if exc.error.code == types.CONNECTION_CLOSED:
                self._broken.set()
            if self._session is not session or self._broken.is_set():
                raise ToolUnavailable(exc.error.message) from None
            return ToolOutput(f"error: {exc.error.message}", is_error=True)
        except (TimeoutError, asyncio.CancelledError):
            raise
        except Exception as exc:  # the transport: the child died, the connection dropped
            self._broken.set()
            raise ToolUnavailable(_short(exc)) from None
        if not isinstance(result, types.CallToolResult):
            return ToolOutput("error: the server asked for input the bot cannot give", is_error=True)
        return ToolOutput(_text_of(result), is_error=bool(result.is_error))

    # -- the session's task ----------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = FIRST_BACKOFF
        while True:
            self._broken.clear()
            try:
                await self._session_once()
                backoff = FIRST_BACKOFF  # it was up: the next try comes soon
                self.error = self.error if self.error else "connection lost"
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # anyio wraps transport failures in groups
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                self.error = _short(exc)
                log.warning("MCP server %s unavailable: %s", self.spec.name, self.error)
            finally:
                self._session = None
                self.tools = []
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _session_once(self) -> None:
        from mcp.client.session import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        spec = self.spec
        async with AsyncExitStack() as stack:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                if spec.command:
                    params = StdioServerParameters(
                        command=spec.command, args=list(spec.args), env=dict(spec.env) or None, cwd=spec.cwd
                    )
                    read, write = await stack.enter_async_context(stdio_client(params))
                else:
                    http = create_mcp_http_client(headers=dict(spec.headers) or None)
                    await stack.enter_async_context(http)
                    read, write = await stack.enter_async_context(
                        streamable_http_client(spec.url, http_client=http)
                    )
                session = await stack.enter_async_context(
                    ClientSession(read, write, message_handler=self._on_message)
                )
                await session.initialize()
                self.tools = await self._list(session)
            self._session, self.error = session, ""
            self.connects += 1
            self._ready.set()
            log.info("MCP server %s up: %d tools", spec.name, len(self.tools))
            await self._watch(session)
            self.error = "connection lost"

    async def _watch(self, session: ClientSession) -> None:
        while not self._broken.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PING_EVERY):
                    await self._broken.wait()
                    return
            try:
                async with asyncio.timeout(5.0):
                    await session.send_ping()
            except Exception as exc:
                log.warning("MCP server %s stopped answering: %s", self.spec.name, _short(exc))
                return

    async def _list(self, session: ClientSession) -> list[ToolInfo]:
        import mcp_types as types

        tools: list[ToolInfo] = []
        cursor: str | None = None
        for _ in range(100):  # a paginator that never ends cannot hang the start
            listed = await session.list_tools(
                params=types.PaginatedRequestParams(cursor=cursor) if cursor else None
            )
            tools += [self._info(t) for t in listed.tools if self.spec.allows(t.name)]
            cursor = listed.next_cursor
            if not cursor:
                break
        return tools

    def _info(self, tool: types.Tool) -> ToolInfo:
        annotations = tool.annotations
        title = tool.title or (annotations.title if annotations and annotations.title else "") or tool.name
        return ToolInfo(
            server=self.spec.name, name=tool.name, title=title, description=tool.description or "",
            schema=dict(tool.input_schema or {"type": "object", "properties": {}}),
            read_only=bool(annotations and annotations.read_only_hint),
        )

    async def _on_message(self, message: IncomingMessage) -> None:
        import mcp_types as types

        if isinstance(message, Exception):
            self._broken.set()
        elif isinstance(message, types.ToolListChangedNotification):
            session = self._session
            if session is not None:
                task = asyncio.create_task(self._relist(session))
                self._relists.add(task)
                task.add_done_callback(self._relists.discard)

    async def _relist(self, session: ClientSession) -> None:
        try:
            tools = await self._list(session)
        except Exception as exc:
            log.warning("MCP server %s: could not list its tools again: %s", self.spec.name, _short(exc))
            return
        if self._session is session:
            self.tools = tools
            log.info("MCP server %s: its tools changed, now %d", self.spec.name, len(tools))


class ToolServers:
    """Every configured server, by name."""

    def __init__(self, specs: Iterable[ServerSpec]) -> None:
        self.servers = {spec.name: ToolServer(spec) for spec in specs}

    def __bool__(self) -> bool:
        return bool(self.servers)

    async def start(self, wait: float = CONNECT_TIMEOUT) -> None:
        """Start every server; wait up to `wait` for them to come up (one that does not is
        retried in the background, never holding the bot back)."""
        for server in self.servers.values():
            server.start()
        await asyncio.gather(*(s.wait_ready(wait) for s in self.servers.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers.values()))

    def offered(self, chosen: Iterable[str]) -> list[ToolInfo]:
        """The tools of the chosen servers that are up now."""
        return [t for name in chosen if (s := self.servers.get(name)) and s.up for t in s.tools]

    def status_lines(self) -> list[str]:
        lines = []
        for name, server in self.servers.items():
            where = server.spec.command or server.spec.url
            if server.up:
                lines.append(f"{name} ({server.spec.transport}): up, {len(server.tools)} tools")
            else:
                lines.append(f"{name} ({server.spec.transport} {where}): down: {server.error}")
        return lines
