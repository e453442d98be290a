"""Wiring: build the engine and its connections from settings, close them after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.clock import Clock
from bot.config import Settings
from bot.engine import Engine
from bot.model.llm import LLMClient
from bot.ops import tracing
from bot.state import store


@asynccontextmanager
async def open_engine(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Engine]:
    client = await store.connect(settings)
    model = LLMClient(settings.model, clock=clock)
    engine = Engine(settings, client, model, clock)
    traced = tracing.setup(settings.traces)
    try:
        await engine.listen()
        yield engine
    finally:
        await engine.close()
        await model.aclose()
        await client.aclose()
        if traced:  # the last spans go out from a thread: the exporter's HTTP client blocks
            await asyncio.to_thread(tracing.shutdown)
