"""Traces of one turn: the span tree and its GenAI attributes (in memory), the trace id in the JSON
log line, and the spans over OTLP/HTTP to a local receiver, decoded as a collector would."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bot.app.runtime import open_engine
from bot.config import TraceSettings, load_settings
from bot.engine import Engine
from bot.ops import logs, tracing
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.otlp import FakeCollector
from tests.support.clock import FastClock
from tests.support.core import turn
from tests.support.surfaces import RecordingSurface


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.shutdown()


@pytest.fixture
async def traced_engine(engine_env: dict[str, str], clock: FastClock) -> AsyncIterator[Engine]:
    env = engine_env | {"USER_MESSAGES_PER_MINUTE": "100"}  # the limits are read (and traced)
    async with open_engine(load_settings(env, dotenv=False), clock) as engine:
        yield engine


def by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        named.setdefault(span.name, []).append(span)
    return named


async def answer_one(engine: Engine, text: str = "hello") -> RecordingSurface:
    surface = RecordingSurface()
    assert await engine.claim("test", "E1")
    await engine.answer(replace(turn(text, surface=surface), event_id="E1"))
    return surface


async def json_log_of(engine: Engine) -> list[dict[str, object]]:
    """The JSON log lines of one turn."""
    stream = io.StringIO()
    logs.setup_logging(fmt="json", stream=stream)
    try:
        await answer_one(engine)
    finally:
        logs.teardown_logging()
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_one_turn_is_one_trace_with_a_span_per_step(
    traced_engine: Engine, fake_llm: FakeLLM, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "WAIT_SPAN_NS", 0)  # every pacing wait a span, however short
    fake_llm.answer = Answer.words(30, tokens_per_second=200)
    await answer_one(traced_engine)
    named = by_name(spans.get_finished_spans())
    [root] = named["chatbot turn"]
    assert root.parent is None
    assert {s.context.trace_id for s in spans.get_finished_spans()} == {root.context.trace_id}
    for step in ("claim", "limits", "files", "lock and history", "chat test/model", "store"):
        [span] = named[step]
        assert span.parent is not None and span.parent.span_id == root.context.span_id, step
    assert root.attributes is not None
    assert root.attributes["chatbot.platform"] == "test"
    assert root.attributes["chatbot.persona"] == "default" and root.attributes["chatbot.outcome"] == "ok"
    # The claim came before the turn's span was made, and is drawn where it happened.
    assert root.start_time is not None and named["claim"][0].start_time is not None
    assert root.start_time <= named["claim"][0].start_time

    [chat] = named["chat test/model"]
    attributes = dict(chat.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "together"
    assert attributes["gen_ai.request.model"] == "test/model"
    assert attributes["gen_ai.response.model"] == "fake"
    assert attributes["gen_ai.request.max_tokens"] == 1024
    assert attributes["gen_ai.usage.output_tokens"] == 30 and attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert [e.name for e in chat.events] == ["gen_ai.first_token"]
    assert not any("messages" in key for key in attributes)  # no text unless asked for

    writes = [s for s in spans.get_finished_spans() if s.name.startswith("platform ")]
    assert {"platform post", "platform edit"} <= {s.name for s in writes}
    for write in writes:
        assert write.parent is not None and write.parent.span_id == root.context.span_id
        assert write.attributes is not None and float(write.attributes["chatbot.pacing.wait_ms"]) >= 0
    waits = named["pacing wait"]
    assert waits and {w.parent.span_id for w in waits if w.parent} <= {w.context.span_id for w in writes}


async def test_message_text_is_recorded_only_when_asked(
    traced_engine: Engine, fake_llm: FakeLLM, spans: InMemorySpanExporter
) -> None:
    tracing._state.capture_content = True
    fake_llm.answer = Answer.of("the secret answer")
    await answer_one(traced_engine, "the secret question")
    [chat] = by_name(spans.get_finished_spans())["chat test/model"]
    attributes = dict(chat.attributes or {})
    assert "the secret question" in str(attributes["gen_ai.input.messages"])
    [output] = json.loads(str(attributes["gen_ai.output.messages"]))
    assert output["parts"][0]["content"] == "the secret answer"


async def test_a_fallback_is_two_model_spans_the_first_failed(
    engine_env: dict[str, str], clock: FastClock, fake_llm: FakeLLM, spans: InMemorySpanExporter
) -> None:
    env = engine_env | {"BOT_FALLBACK_MODELS": "spare/model", "LLM_MAX_RETRIES": "0"}
    async with open_engine(load_settings(env, dotenv=False), clock) as engine:
        fake_llm.fail_model("test/model", "503")
        await answer_one(engine)
    named = by_name(spans.get_finished_spans())
    [failed] = named["chat test/model"]
    assert failed.attributes is not None and failed.attributes["error.type"] == "unavailable"
    assert failed.attributes["chatbot.fallback.reason"] == "server_error"
    assert failed.attributes["http.response.status_code"] == 503
    assert not failed.status.is_ok
    [answered] = named["chat spare/model"]
    assert answered.status.is_unset
    assert named["chatbot turn"][0].attributes["chatbot.model"] == "spare/model"  # type: ignore[index]


async def test_the_turns_json_log_line_carries_its_trace_id(
    traced_engine: Engine, spans: InMemorySpanExporter
) -> None:
    lines = await json_log_of(traced_engine)
    [root] = by_name(spans.get_finished_spans())["chatbot turn"]
    [answered] = [line for line in lines if line["msg"] == "answered"]
    assert answered["trace_id"] == format(root.context.trace_id, "032x")


async def test_without_an_endpoint_nothing_is_traced(traced_engine: Engine) -> None:
    assert not tracing.setup(TraceSettings())
    assert not tracing.active()
    lines = await json_log_of(traced_engine)
    assert lines and all("trace_id" not in line for line in lines)


async def test_spans_go_out_over_otlp_http(engine_env: dict[str, str], clock: FastClock) -> None:
    async with FakeCollector() as collector:
        env = engine_env | {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_SERVICE_NAME": "chatbot-test"}
        async with open_engine(load_settings(env, dotenv=False), clock) as engine:
            assert tracing.active()
            await answer_one(engine)
        # Leaving the engine flushed the batch (from a thread, while this loop served the receiver).
        assert not tracing.active()
    assert set(collector.content_types) == {"application/x-protobuf"}
    service = {a.value.string_value for rs in collector.resource_spans() for a in rs.resource.attributes
               if a.key == "service.name"}
    assert service == {"chatbot-test"}
    exported = {s.name: s for s in collector.spans()}
    assert {"chatbot turn", "claim", "lock and history", "chat test/model", "store"} <= set(exported)
    chat = {a.key: a.value for a in exported["chat test/model"].attributes}
    assert chat["gen_ai.request.model"].string_value == "test/model"
    assert chat["gen_ai.operation.name"].string_value == "chat"
    assert chat["gen_ai.usage.output_tokens"].int_value == 3
    assert exported["chat test/model"].trace_id == exported["chatbot turn"].trace_id
    assert exported["chat test/model"].parent_span_id == exported["chatbot turn"].span_id
    assert [e.name for e in exported["chat test/model"].events] == ["gen_ai.first_token"]
