"""Metrics and the answer log fed by the engine itself: a real answer, real Redis, fake model."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.engine import Engine
from bot.model.llm import LLMClient
from bot.ops import logs, metrics
from tests.fakes.llm import Answer, FakeLLM
from tests.support.core import turn
from tests.support.helpers import wait_until
from tests.support.surfaces import RecordingSurface

API_KEY = "test-together-key-0123456789abcdef"
OTHER_SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-" + "test-4444-5555-ffff",  # fake, split so no scan mistakes it
    "SLACK_APP_TOKEN": "xapp-" + "1-test-6666-ffff",
    "DISCORD_BOT_TOKEN": "discord-test-token-7777",
}


@pytest.fixture(autouse=True)
def m() -> Iterator[metrics.Metrics]:
    yield metrics.reset()
    metrics.reset()


@pytest.fixture
def log_out() -> Iterator[io.StringIO]:
    yield io.StringIO()
    logs.teardown_logging()


def value(m: metrics.Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


async def test_an_answer_feeds_every_metric(engine: Engine, fake_llm: FakeLLM, m: metrics.Metrics) -> None:
    fake_llm.answer = Answer.words(30, tokens_per_second=60)
    task = engine.submit(turn("hello", surface=RecordingSurface()))
    await wait_until(lambda: value(m, "chatbot_live_streams", platform="test") == 1)
    outcome = await task
    assert value(m, "chatbot_live_streams", platform="test") == 0

    assert value(m, "chatbot_answers_total", platform="test", outcome="ok") == 1
    assert value(m, "chatbot_tokens_total", platform="test", direction="out") == 30
    assert value(m, "chatbot_tokens_total", platform="test", direction="in") == outcome.tokens_in > 0
    assert value(m, "chatbot_time_to_first_token_seconds_count", platform="test") == 1
    ttft = value(m, "chatbot_time_to_first_token_seconds_sum", platform="test")
    total = value(m, "chatbot_answer_duration_seconds_sum", platform="test")
    assert ttft is not None and total is not None and 0 < ttft < total  # both from the arrival
    assert outcome.ttft_s == pytest.approx(ttft)


async def test_model_errors_are_counted_per_failed_attempt(
    engine: Engine, fake_llm: FakeLLM, m: metrics.Metrics
) -> None:
    fake_llm.fail_next("503")
    assert (await engine.answer(turn("hi"))).outcome == "ok"  # its one retry answered
    assert value(m, "chatbot_model_errors_total", kind="unavailable") == 1

    fake_llm.fail_next("503", times=2)  # a model is retried once (bot/model/fallback.py): then the error
    assert (await engine.answer(turn("hi", thread="t3"))).outcome == "error"
    assert value(m, "chatbot_model_errors_total", kind="unavailable") == 3

    fake_llm.fail_next("401")
    assert (await engine.answer(turn("hi", thread="t2"))).outcome == "error"
    assert value(m, "chatbot_model_errors_total", kind="auth") == 1
    assert value(m, "chatbot_answers_total", platform="test", outcome="error") == 2
    # An answer that never got a token observes no time to first token.
    assert value(m, "chatbot_time_to_first_token_seconds_count", platform="test") == 1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def engine_without_redis(engine_env: dict[str, str]) -> AsyncIterator[Engine]:
    settings = load_settings(engine_env, dotenv=False)
    client = redis.Redis(
        port=closed_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0), decode_responses=True
    )
    model = LLMClient(settings.model)
    yield Engine(settings, client, model)
    await model.aclose()
    await client.aclose()


async def test_redis_errors_are_counted_and_the_answer_still_comes(
    engine_without_redis: Engine, fake_llm: FakeLLM, m: metrics.Metrics
) -> None:
    """Redis unreachable: the event is claimed (this process's memory is the dedup), answered
    from what the turn carries, and the outage shows in the metrics, not to the person."""
    engine = engine_without_redis
    engine.store_state.retry_after = 0  # try Redis each time, so each failure is counted
    assert await engine.claim("test", "event-1") is True
    assert await engine.claim("test", "event-1") is False  # the same process never answers twice
    assert value(m, "chatbot_redis_errors_total", operation="claim") == 1
    assert value(m, "chatbot_redis_degraded") == 1

    fake_llm.answer = Answer.of("Answered anyway.")
    surface = RecordingSurface()
    outcome = await engine.answer(turn("hi", surface=surface))
    assert (outcome.outcome, outcome.degraded) == ("ok", True)
    assert surface.text == "Answered anyway."
    assert "Something went wrong" not in surface.text
    assert value(m, "chatbot_redis_errors_total", operation="history") == 1
    assert value(m, "chatbot_degraded_answers_total", platform="test") == 1
    assert len(fake_llm.requests) == 1


async def test_answer_log_line_has_json_fields(
    engine: Engine, fake_llm: FakeLLM, log_out: io.StringIO
) -> None:
    logs.setup_logging("INFO", "json", stream=log_out)
    fake_llm.answer = Answer.words(5)
    await engine.answer(turn("hello"))
    entries = [json.loads(line) for line in log_out.getvalue().splitlines()]
    (line,) = [e for e in entries if e["logger"] == "bot.answer"]
    assert line["msg"] == "answered" and line["level"] == "INFO"
    fields = ("platform", "conversation", "persona", "model", "outcome", "tokens_out")
    assert {k: line[k] for k in fields} == {
        "platform": "test", "conversation": "test:W1:C1:t1", "persona": "default",
        "model": "test/model", "outcome": "ok", "tokens_out": 5,
    }
    assert line["tokens_in"] > 0
    assert 0 <= line["intake_s"] <= line["ttft_s"] <= line["total_s"]


async def test_failed_answer_logs_a_warning_line_with_the_error(
    engine: Engine, fake_llm: FakeLLM, log_out: io.StringIO
) -> None:
    logs.setup_logging("INFO", "text", stream=log_out)
    fake_llm.fail_next("404")
    await engine.answer(turn("hello"))
    line = next(x for x in log_out.getvalue().splitlines() if "bot.answer: answered" in x)
    assert " WARNING " in line
    assert "platform=test" in line and "outcome=error" in line and "error=not_found" in line
    assert "ttft_s" not in line  # no token came


async def test_a_full_answer_at_debug_logs_no_secret(
    engine_env: dict[str, str], fake_llm: FakeLLM, log_out: io.StringIO
) -> None:
    env = engine_env | {"TOGETHER_API_KEY": API_KEY, "LOG_LEVEL": "debug"} | OTHER_SECRETS
    settings = load_settings(env, dotenv=False)
    logs.setup_logging(settings.log_level, "text", secrets=settings.secrets(), stream=log_out)
    fake_llm.api_key = API_KEY  # the key really goes over the wire
    fake_llm.answer = Answer.words(20, tokens_per_second=200)
    async with open_engine(settings) as engine:
        surface = RecordingSurface()
        assert (await engine.answer(turn("hello", surface=surface))).outcome == "ok"
        fake_llm.api_key = "another-key"  # now the key is refused: the error paths log too
        await engine.answer(turn("again", thread="t2"))
    text = log_out.getvalue()
    assert "httpx" in text and "bot.answer" in text and "401" in text  # DEBUG really logged
    for secret in (API_KEY, *OTHER_SECRETS.values()):
        assert secret not in text
    assert "0123456789abcdef" not in text and "4444-5555" not in text
