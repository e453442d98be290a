"""The metrics the engine and adapters feed: names, labels, values."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.ops import metrics


@pytest.fixture
def m() -> Iterator[metrics.Metrics]:
    yield metrics.reset()
    metrics.reset()


def value(m: metrics.Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_answer_finished_counts_answer_tokens_and_times(m: metrics.Metrics) -> None:
    metrics.answer_finished("slack", "ok", tokens_in=120, tokens_out=30, ttft_s=0.4, total_s=2.5)
    metrics.answer_finished("slack", "ok", tokens_in=80, tokens_out=10, ttft_s=0.6, total_s=1.5)
    metrics.answer_finished("discord", "error")

    assert value(m, "chatbot_answers_total", platform="slack", outcome="ok") == 2
    assert value(m, "chatbot_answers_total", platform="discord", outcome="error") == 1
    assert value(m, "chatbot_tokens_total", platform="slack", direction="in") == 200
    assert value(m, "chatbot_tokens_total", platform="slack", direction="out") == 40
    assert value(m, "chatbot_time_to_first_token_seconds_count", platform="slack") == 2
    assert value(m, "chatbot_time_to_first_token_seconds_sum", platform="slack") == pytest.approx(
        1.0
    )
    assert value(m, "chatbot_time_to_first_token_seconds_bucket", platform="slack", le="0.5") == 1
    assert value(m, "chatbot_answer_duration_seconds_count", platform="slack") == 2
    # An answer that never got a token observes no time to first token.
    assert value(m, "chatbot_time_to_first_token_seconds_count", platform="discord") is None


def test_platform_writes_keep_429s_apart(m: metrics.Metrics) -> None:
    metrics.platform_write("slack", "chat.update", "ok")
    metrics.platform_write("slack", "chat.update", 429)
    metrics.platform_write("slack", "chat.update", 429)

    total = "chatbot_platform_writes_total"
    assert value(m, total, platform="slack", method="chat.update", status="ok") == 1
    assert value(m, total, platform="slack", method="chat.update", status="429") == 2


def test_model_redis_and_limit_counters(m: metrics.Metrics) -> None:
    metrics.model_error("429")
    metrics.model_error("timeout")
    metrics.model_error("429")
    metrics.redis_error("history")
    metrics.limited("discord", "user_rate")

    assert value(m, "chatbot_model_errors_total", kind="429") == 2
    assert value(m, "chatbot_model_errors_total", kind="timeout") == 1
    assert value(m, "chatbot_redis_errors_total", operation="history") == 1
    assert value(m, "chatbot_limited_total", platform="discord", reason="user_rate") == 1


def test_live_stream_gauge_returns_to_zero_even_on_error(m: metrics.Metrics) -> None:
    with metrics.live_stream("slack"):
        assert value(m, "chatbot_live_streams", platform="slack") == 1
        with pytest.raises(RuntimeError), metrics.live_stream("slack"):
            assert value(m, "chatbot_live_streams", platform="slack") == 2
            raise RuntimeError("stream broke")
        assert value(m, "chatbot_live_streams", platform="slack") == 1
    assert value(m, "chatbot_live_streams", platform="slack") == 0


def test_reset_starts_from_zero_and_exposition_serves_the_new_registry() -> None:
    metrics.reset()
    metrics.answer_finished("slack", "ok")
    body, content_type = metrics.exposition()
    assert b'chatbot_answers_total{outcome="ok",platform="slack"} 1.0' in body
    assert content_type.startswith("text/plain; version=0.0.4")

    fresh = metrics.reset()
    assert value(fresh, "chatbot_answers_total", platform="slack", outcome="ok") is None
    body, _ = metrics.exposition()
    assert b"chatbot_answers_total{" not in body
    assert b"# TYPE chatbot_answers_total counter" in body


def test_exposition_speaks_openmetrics_when_the_scraper_prefers_it(m: metrics.Metrics) -> None:
    metrics.model_error("503")
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    body, content_type = metrics.exposition(accept)
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b'chatbot_model_errors_total{kind="503"} 1.0' in body
