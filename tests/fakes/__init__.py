"""Protocol fakes (see ../shared/FAKES.md); `serve` starts one's aiohttp app on loopback."""

from __future__ import annotations

from aiohttp import web


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Run `app` on `host:port` (0: a free port); the runner to clean up, and the port it took."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None and server.sockets  # type: ignore[attr-defined]
    return runner, server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
