"""A fake OpenTelemetry collector: OTLP/HTTP on loopback, each export decoded as
`ExportTraceServiceRequest` (the protobuf classes opentelemetry-proto ships).

    async with FakeCollector() as collector:
        ...  # OTEL_EXPORTER_OTLP_ENDPOINT=collector.url
        collector.spans()  # every span received, by name

Standalone, for a bot in another process or a benchmark (prints its URL, then how many
spans it took when stopped):
    .venv/bin/python -m tests.fakes.otlp --port 4318
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from tests.fakes import serve


class FakeCollector:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.exports: list[ExportTraceServiceRequest] = []
        self.content_types: list[str] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it (`/v1/traces` is added)."""
        return f"http://{self.host}:{self.port}"

    def resource_spans(self) -> list[ResourceSpans]:
        return [rs for export in self.exports for rs in export.resource_spans]

    def spans(self) -> list[Span]:
        return [s for rs in self.resource_spans() for ss in rs.scope_spans for s in ss.spans]

    async def _traces(self, request: web.Request) -> web.Response:
        self.content_types.append(request.content_type)
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        self.exports.append(export)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def __aenter__(self) -> FakeCollector:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        self._runner, self.port = await serve(app, self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner:
            await self._runner.cleanup()


async def _serve(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with FakeCollector(port=port) as collector:
        print(f"fake OTLP collector on {collector.url}", flush=True)
        await stop.wait()
        print(f"spans received: {len(collector.spans())}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.otlp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=4318, help="port on 127.0.0.1 (default 4318)")
    asyncio.run(_serve(parser.parse_args().port))
