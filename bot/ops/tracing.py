"""Traces of turns: OpenTelemetry, with the GenAI semantic conventions on the model spans.

One trace per turn (`turn`): spans for the claim, the limits, the files, the conversation's
lock and history read, each model request (`ModelCall`: `gen_ai.*` attributes, the first
token as an event), each platform write with its pacing wait (`write_path`), and the store.
The platform and the persona are attributes; message text only with
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`.

Exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set.
Otherwise no SDK is loaded: the tracer is the API's no-op one and the helpers below
return before building anything, so tracing costs nothing measurable.

Written by hand rather than with the httpx instrumentation: a model request's span must
carry what only the chain knows (the model spec, the provider, the fallback reason, the
first token), which an HTTP span does not; and the platform writes go out through
slack_sdk and discord.py over aiohttp, which httpx's instrumentation does not see.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Status, StatusCode

from bot.config import TraceSettings

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from opentelemetry.sdk.trace import TracerProvider

    from bot.contract import ReplySurface
    from bot.delivery.pacing import Pacer
    from bot.model.llm import ChatRequest, Delta

T = TypeVar("T")

_NO_SPAN = NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
WAIT_SPAN_NS = 5_000_000  # a pacing wait this long (5 ms) is a span of its own; shorter, an attribute


class _State:
    tracer: trace.Tracer = trace.NoOpTracer()
    provider: TracerProvider | None = None
    capture_content = False


_state = _State()


def active() -> bool:
    return _state.provider is not None


def capture_content() -> bool:
    return _state.capture_content


def setup(settings: TraceSettings) -> bool:
    """Export traces when an OTLP endpoint is set; True if it is."""
    if not settings.enabled:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    # The batch processor exports from its own thread: the event loop never waits on the collector.
    exporter = OTLPSpanExporter(endpoint=settings.endpoint, headers=parse_headers(settings.headers))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider, capture=settings.capture_content)
    return True


def parse_headers(raw: str | None) -> dict[str, str]:
    """`OTEL_EXPORTER_OTLP_HEADERS`: `key=value,key2=value2`, values URL-encoded (the spec's format)."""
    headers: dict[str, str] = {}
    for item in (raw or "").split(","):
        key, eq, value = item.partition("=")
        if eq and key.strip():
            headers[unquote(key.strip())] = unquote(value.strip())
    return headers


def install(provider: TracerProvider, *, capture: bool = False) -> None:
    """Trace with `provider` from now on (setup; tests give one with an in-memory exporter)."""
    _state.provider = provider
    _state.tracer = provider.get_tracer("chatbot")
    _state.capture_content = capture


def shutdown() -> None:
    """Export what is pending and stop tracing (the service's end; tests)."""
    provider, _state.provider = _state.provider, None
    _state.tracer = trace.NoOpTracer()
    _state.capture_content = False
    if provider is not None:
        provider.shutdown()


def current_trace_id() -> str | None:
    """The trace id of the span in force, as the log lines carry it (32 hex digits), or None."""
    if _state.provider is None:
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _wall_ns(monotonic: float) -> int:
    """A `time.monotonic()` instant as the wall-clock nanoseconds spans are stamped with."""
    return time.time_ns() - int((time.monotonic() - monotonic) * 1e9)


# ---- the turn -------------------------------------------------------------------------


@contextmanager
def turn(name: str, received_at: float, attributes: Mapping[str, Any]) -> Iterator[Span]:
    """The turn's root span, from the event's arrival, current while the block runs."""
    if _state.provider is None:
        yield _NO_SPAN
        return
    with _state.tracer.start_as_current_span(
        name, start_time=_wall_ns(received_at), attributes=dict(attributes), record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def past_span(name: str, start: float, end: float, attributes: Mapping[str, Any] | None = None) -> None:
    """A child of the current span for work done before it began (the claim), from monotonic times."""
    if _state.provider is None:
        return
    span = _state.tracer.start_span(name, start_time=_wall_ns(start), attributes=dict(attributes or {}))
    span.end(end_time=_wall_ns(end))


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """A child of the current span around the block."""
    if _state.provider is None:
        yield _NO_SPAN
        return
    with _state.tracer.start_as_current_span(name, attributes=dict(attributes or {})) as current:
        yield current


@asynccontextmanager
async def around(
    manager: AbstractAsyncContextManager[T], enter: str, leave: str
) -> AsyncIterator[T]:
    """`async with manager` with a span for its entry and one for its exit (the conversation's lock
    and history read, then the store that releases it)."""
    if _state.provider is None:
        async with manager as value:
            yield value
        return
    with span(enter):
        value = await manager.__aenter__()
    try:
        yield value
    except BaseException as exc:
        with span(leave):
            if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
                raise
    else:
        with span(leave):
            await manager.__aexit__(None, None, None)


def set_attributes(target: Span, attributes: Mapping[str, Any]) -> None:
    if target.is_recording():
        target.set_attributes({k: v for k, v in attributes.items() if v is not None and v != ""})


# ---- a model request (GenAI semantic conventions) --------------------------------------


def _shown_messages(messages: Sequence[Mapping[str, Any]]) -> str:
    """The request's messages as `gen_ai.input.messages` carries them, images named, not inlined."""
    shown = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = [p if p.get("type") == "text" else {"type": str(p.get("type"))} for p in content
                     if isinstance(p, dict)]
            shown.append({"role": message.get("role"), "parts": parts})
        else:
            shown.append({"role": message.get("role"), "parts": [{"type": "text", "content": content}]})
    return json.dumps(shown, ensure_ascii=False)


class ModelCall:
    """The span of one chat completions request; every method is a no-op when tracing is off."""

    def __init__(self, provider: str, model: str, base_url: str, request: ChatRequest, spec: str) -> None:
        self.text: list[str] = []
        self.finish: str | None = None
        self.started = False
        self.model_said = False
        self.capture = _state.capture_content
        self.recording = _state.provider is not None
        if _state.provider is None:
            self.span: Span = _NO_SPAN
            return
        url = urlsplit(base_url)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.request.max_tokens": request.max_tokens,
            "gen_ai.request.temperature": request.temperature,
            "server.address": url.hostname,
            "server.port": url.port,
            "chatbot.model": spec,
        }
        if _state.capture_content:
            attributes["gen_ai.input.messages"] = _shown_messages(request.messages)
        self.span = _state.tracer.start_span(
            f"chat {model}", kind=SpanKind.CLIENT,
            attributes={k: v for k, v in attributes.items() if v is not None},
        )

    def delta(self, delta: Delta) -> None:
        """Called for every chunk of the answer: as little as possible once the first has been seen."""
        if not self.recording:
            return
        if not self.started and (delta.content or delta.reasoning):
            self.started = True
            self.span.add_event("gen_ai.first_token")
        if delta.model and not self.model_said:  # every chunk names it: once is enough
            self.model_said = True
            self.span.set_attribute("gen_ai.response.model", delta.model)
        if delta.usage:
            self.span.set_attributes({"gen_ai.usage.input_tokens": delta.usage.prompt_tokens,
                                      "gen_ai.usage.output_tokens": delta.usage.completion_tokens})
        if delta.finish_reason:
            self.finish = delta.finish_reason
        if self.capture and delta.content:
            self.text.append(delta.content)

    def end(self, error: BaseException | None = None, fallback_reason: str | None = None) -> None:
        if not self.recording:
            return
        if self.finish:
            self.span.set_attribute("gen_ai.response.finish_reasons", [self.finish])
        if _state.capture_content and self.text:
            output = [{"role": "assistant", "parts": [{"type": "text", "content": "".join(self.text)}],
                       "finish_reason": self.finish or ""}]
            self.span.set_attribute("gen_ai.output.messages", json.dumps(output, ensure_ascii=False))
        if isinstance(error, GeneratorExit | asyncio.CancelledError):
            self.span.set_attribute("chatbot.cancelled", True)  # a Stop, an edit, a shutdown: no error
        elif error is not None:
            kind = getattr(error, "kind", type(error).__name__)
            self.span.set_attribute("error.type", str(kind))
            status = getattr(error, "status", None)
            if status:
                self.span.set_attribute("http.response.status_code", int(status))
            self.span.set_status(Status(StatusCode.ERROR, str(kind)))
        if fallback_reason:
            self.span.set_attribute("chatbot.fallback.reason", fallback_reason)
        self.span.end()


# ---- platform writes with their pacing wait ------------------------------------------


class _Writes:
    """The pacing waits of one answer not yet matched with the write they were for."""

    def __init__(self) -> None:
        self.waits: list[tuple[int, int]] = []


class _TracedPacer:
    """The engine's pacer for one answer: its waits are noted for the write that follows."""

    def __init__(self, pacer: Pacer, writes: _Writes) -> None:
        self._pacer = pacer
        self._writes = writes
        self.clock = pacer.clock  # read at every wait of the stream: not through __getattr__

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pacer, name)

    async def _timed(self, name: str, *args: Any, **kwargs: Any) -> Any:
        start = time.time_ns()
        try:
            return await getattr(self._pacer, name)(*args, **kwargs)
        finally:
            self._writes.waits.append((start, time.time_ns()))

    async def use(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed("use", *args, **kwargs)

    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed("reserve", *args, **kwargs)

    async def progress(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed("progress", *args, **kwargs)


class _TracedSurface:
    """The turn's surface: each write a span, from the start of the pacing wait before it."""

    def __init__(self, surface: ReplySurface, writes: _Writes) -> None:
        self._surface = surface
        self._writes = writes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._surface, name)

    async def _write(self, method: str, *args: Any, **kwargs: Any) -> Any:
        # The cheapest span the SDK makes (one a write, tens an answer): not made current (nothing
        # under it is traced), one attribute (the platform is the turn's).
        waits, self._writes.waits = self._writes.waits, []
        start = min([w[0] for w in waits] + [time.time_ns()])
        waited = sum(end - begin for begin, end in waits)
        attributes = {"chatbot.pacing.wait_ms": round(waited / 1e6, 3)}
        write = _state.tracer.start_span(f"platform {method}", start_time=start, attributes=attributes)
        try:
            for begin, end in waits:
                # A span of its own only for a real wait: the budget's round trip alone is in wait_ms.
                if end - begin >= WAIT_SPAN_NS:
                    context = trace.set_span_in_context(write)
                    _state.tracer.start_span("pacing wait", context, start_time=begin).end(end_time=end)
            return await getattr(self._surface, method)(*args, **kwargs)
        except BaseException as exc:
            write.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            write.end()

    async def post(self, *args: Any, **kwargs: Any) -> Any:
        return await self._write("post", *args, **kwargs)

    async def edit(self, *args: Any, **kwargs: Any) -> Any:
        return await self._write("edit", *args, **kwargs)

    async def delete(self, *args: Any, **kwargs: Any) -> Any:
        return await self._write("delete", *args, **kwargs)


class _TracedFinishingSurface(_TracedSurface):
    """For surfaces with a closing call (`FinishingSurface`): the proxy has one only if they do."""

    async def finish(self, *args: Any, **kwargs: Any) -> Any:
        return await self._write("finish", *args, **kwargs)


def write_path(surface: ReplySurface, pacer: Pacer) -> tuple[ReplySurface, Pacer]:
    """The surface and pacer an answer writes through: traced ones when tracing is on."""
    if _state.provider is None:
        return surface, pacer
    writes = _Writes()
    proxy = _TracedFinishingSurface if hasattr(surface, "finish") else _TracedSurface
    return cast("ReplySurface", proxy(surface, writes)), cast("Pacer", _TracedPacer(pacer, writes))
