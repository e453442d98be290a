"""A platform that lives outside the bot, plugged in the way a third-party package would be.

`loopback` answers conversations over a local TCP socket, one JSON line each way:

    → {"key": "…", "conversation": "c1", "id": "m1", "text": "hello"}
    ← {"id": "m1", "answer": "…"}              (or {"id": "m1", "refused": "…"})

It is enabled by `LOOPBACK_PORT` (and guarded by `LOOPBACK_TOKEN`, a secret), both read by the
platform itself from the variables the core read (`settings.env`). Nothing in `bot/` or
`adapters/` knows it: it is registered only by the entry point `tests/app/test_plugin_platform.py`
writes into a `*.dist-info` on the bot process's path, as an installed package's would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from dataclasses import dataclass
from typing import Any

from bot.config import Reader
from bot.contract import Adapter, Author, ConversationKey, Core, Host, Platform, SurfaceLimits, Turn
from bot.contract.platform import Check, CheckFailed, Problem

log = logging.getLogger(__name__)

NAME = "loopback"
HOST = "127.0.0.1"
USER = Author(id="loopback-user", name="someone on the loopback")


@dataclass(frozen=True)
class LoopbackSettings:
    port: int
    token: str


class Collected:
    """The answer's messages, kept until the answer is done (a `ReplySurface`)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    @property
    def limits(self) -> SurfaceLimits:
        return SurfaceLimits(max_chars=100_000, min_edit_interval=0.05)

    async def post(self, text: str, *, complete: bool = False, controls: Any = None) -> str:
        self.messages.append(text)
        return str(len(self.messages) - 1)

    async def edit(self, message_id: str, text: str, *, controls: Any = None) -> None:
        self.messages[int(message_id)] = text

    async def delete(self, message_id: str) -> None:
        self.messages[int(message_id)] = ""

    async def set_status(self, status: str | None) -> None:
        return None


class LoopbackAdapter(Adapter):
    name = NAME

    def __init__(self, config: LoopbackSettings, core: Core) -> None:
        self.config = config
        self.core = core
        self._server: asyncio.Server | None = None

    @property
    def connected(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, self.config.port)

    async def stop_intake(self) -> None:
        if self._server is not None:
            self._server.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                # The token is in every request (as "key", which no credential pattern of the
                # log catches): the log hides it only because the platform names it a secret.
                log.debug("loopback request: %s", line.decode().strip())
                reply = await self._answer(json.loads(line))
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    async def _answer(self, request: dict[str, str]) -> dict[str, str]:
        if request.get("key") != self.config.token:
            return {"id": request.get("id", ""), "refused": "wrong token"}
        if not await self.core.claim(NAME, request["id"]):
            return {"id": request["id"], "refused": "already answered"}
        conversation = ConversationKey(NAME, "local", "loopback", request["conversation"])
        surface = Collected()
        await self.core.submit(Turn(
            conversation, USER, request["text"], request["id"], surface=surface, event_id=request["id"],
        ))
        return {"id": request["id"], "answer": "\n\n".join(m for m in surface.messages if m)}


async def port_free(port: int) -> str:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise CheckFailed(f"LOOPBACK_PORT={port} is taken on {HOST}: {exc.strerror}") from None
    return f"port {port} free on {HOST}"


class LoopbackPlatform(Platform[LoopbackSettings]):
    name = NAME
    enable_hint = "LOOPBACK_PORT"

    def configure(self, settings: Any) -> LoopbackSettings | None:
        variables = Reader(settings.env)
        port = variables.optional_integer("LOOPBACK_PORT", minimum=1)
        if port is None:
            return None
        return LoopbackSettings(port, variables.text("LOOPBACK_TOKEN") or "")

    async def build(self, config: LoopbackSettings, settings: Any, core: Core, host: Host) -> Adapter:
        return LoopbackAdapter(config, core)

    def describe(self, config: LoopbackSettings) -> str:
        return f"loopback on {HOST}:{config.port}"

    def problems(self, config: LoopbackSettings, settings: Any, host: Host) -> list[str]:
        if len(config.token) < 8:
            return ["LOOPBACK_TOKEN is shorter than 8 characters: set a longer one."]
        return []

    def checks(self, config: LoopbackSettings, settings: Any, host: Host) -> list[tuple[str, Check]]:
        return [(NAME, lambda: port_free(config.port))]

    def secrets(self, config: LoopbackSettings) -> list[str]:
        return [config.token]

    def startup_problem(self, exc: BaseException, config: LoopbackSettings | None, settings: Any) -> Problem:
        if isinstance(exc, OSError) and config is not None:
            return Problem(f"LOOPBACK_PORT={config.port} cannot be served: {exc.strerror}", 1)
        return super().startup_problem(exc, config, settings)


platform = LoopbackPlatform()
