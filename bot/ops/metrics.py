"""The Prometheus metrics of the service, defined once, and the calls that feed them.

The engine and the adapters call the small functions below (`answer_finished`,
`platform_write`, `model_error`, `redis_error`, `live_stream`, `limited`,
`orphan_marked`, `degraded_answer`, `after_answer_failure`); they never touch a
prometheus-client object. Every metric lives in one `CollectorRegistry` held by
`Metrics`; `reset()` swaps in a fresh one, so each test sees counters from zero and
`/metrics` (see `bot.ops.health`) always serves the registry in force.

Label values are small closed sets on purpose (platform, outcome, method, status
class, error kind): a conversation or user id as a label would grow the series
without bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

# Time to first token: a chat model usually starts within a second; a cold or
# overloaded one can take tens of seconds.
TTFT_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
# Time to the final text: long answers stream for minutes.
TOTAL_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0)
# The longest wait between visible changes of an answer: issue 26 aims at 3 s.
WAIT_BUCKETS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0, 60.0)


@dataclass(frozen=True)
class Metrics:
    """Every metric of the process, registered in one registry."""

    registry: CollectorRegistry
    answers: Counter
    tokens: Counter
    time_to_first_token: Histogram
    answer_duration: Histogram
    platform_writes: Counter
    model_errors: Counter
    live_streams: Gauge
    redis_errors: Counter
    limited: Counter
    orphans_marked: Counter
    pacing: Counter
    pacing_fallbacks: Counter
    progress_parts: Counter
    progress_longest_wait: Histogram
    pacing_budget_used: Gauge
    redis_degraded: Gauge
    degraded_answers: Counter
    after_answer_failures: Counter
    stops: Counter
    tool_calls: Counter
    tool_seconds: Histogram
    tool_approvals: Counter
    feedback: Counter
    feedback_changes: Counter
    answers_again: Counter
    discord_shard_connected: Gauge
    discord_shard_latency: Gauge
    model_fallbacks: Counter
    model_breaker: Gauge
    model_tokens: Counter
    summaries: Counter
    summary_messages: Counter
    summary_requests: Histogram

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry(auto_describe=True)
        return cls(
            registry=registry,
            answers=Counter(
                "chatbot_answers",
                "Turns handled, by platform and outcome "
                "(ok, interrupted, stopped, error, rejected, ignored, limited).",
                ["platform", "outcome"],
                registry=registry,
            ),
            tokens=Counter(
                "chatbot_tokens",
                "Model tokens used, by platform and direction (in = prompt, out = completion).",
                ["platform", "direction"],
                registry=registry,
            ),
            time_to_first_token=Histogram(
                "chatbot_time_to_first_token_seconds",
                "From the message's arrival to the first answer token from the model.",
                ["platform"],
                buckets=TTFT_BUCKETS,
                registry=registry,
            ),
            answer_duration=Histogram(
                "chatbot_answer_duration_seconds",
                "From the message's arrival to the final text written on the platform.",
                ["platform"],
                buckets=TOTAL_BUCKETS,
                registry=registry,
            ),
            platform_writes=Counter(
                "chatbot_platform_writes",
                "Platform API writes by method (chat.update, edit_message, …) and status "
                "(ok, 429, error).",
                ["platform", "method", "status"],
                registry=registry,
            ),
            model_errors=Counter(
                "chatbot_model_errors",
                "Chat completions API errors by kind (rate_limited, unavailable, timeout, "
                "interrupted, auth, …), each failed attempt counted.",
                ["kind"],
                registry=registry,
            ),
            live_streams=Gauge(
                "chatbot_live_streams",
                "Answers streaming right now.",
                ["platform"],
                registry=registry,
            ),
            redis_errors=Counter(
                "chatbot_redis_errors",
                "Redis commands that failed, by operation.",
                ["operation"],
                registry=registry,
            ),
            limited=Counter(
                "chatbot_limited",
                "Messages answered with a limit message instead of a model call, by reason.",
                ["platform", "reason"],
                registry=registry,
            ),
            orphans_marked=Counter(
                "chatbot_orphans_marked",
                "Answers cut by a crash whose message was marked \"restarted mid-answer\" later.",
                ["platform"],
                registry=registry,
            ),
            pacing=Counter(
                "chatbot_pacing",
                "Draws on the shared write budgets, by window (chat.update, edit, …) and kind: "
                "progress / progress_refused, reserved / not_reserved (a final edit kept for an "
                "answer that shows early), throttled (a 429 slowed the whole scope).",
                ["platform", "window", "kind"],
                registry=registry,
            ),
            pacing_fallbacks=Counter(
                "chatbot_pacing_fallbacks",
                "Answers whose final text took another way because the update budget was spent: "
                "whole_text (status, then the whole text in one new message), repost (the final "
                "edit was refused: the text posted anew, the partial message deleted).",
                ["platform", "kind"],
                registry=registry,
            ),
            progress_parts=Counter(
                "chatbot_progress_parts",
                "Messages of their own an answer's text went on in while the model wrote, because "
                "the edit budget could not keep it moving (bot/delivery/pacing.py, rule 5).",
                ["platform"],
                registry=registry,
            ),
            progress_longest_wait=Histogram(
                "chatbot_progress_longest_wait_seconds",
                "Per answer, the longest time people saw no change while the model wrote: the first "
                "token to the first text, between two writes, the last write to the end.",
                ["platform"],
                buckets=WAIT_BUCKETS,
                registry=registry,
            ),
            pacing_budget_used=Gauge(
                "chatbot_pacing_budget_used_ratio",
                "Share of a write budget in use (writes in the window plus finals reserved, over "
                "its limit) as last seen by this process, by window; 1 means saturated.",
                ["platform", "window"],
                registry=registry,
            ),
            redis_degraded=Gauge(
                "chatbot_redis_degraded",
                "1 while Redis is unreachable and answers go on without it, else 0.",
                registry=registry,
            ),
            degraded_answers=Counter(
                "chatbot_degraded_answers",
                "Answers given while Redis was unreachable (history from the platform, "
                "no dedup or lock across replicas).",
                ["platform"],
                registry=registry,
            ),
            after_answer_failures=Counter(
                "chatbot_after_answer_failures",
                "Failures after an answer's final text landed (storing it, releasing the lock, "
                "usage), logged and counted, never shown.",
                ["stage"],
                registry=registry,
            ),
            stops=Counter(
                "chatbot_stops",
                "Stop presses on answers while they streamed: stopped, or refused (not the "
                "asker nor an admin).",
                ["platform", "result"],
                registry=registry,
            ),
            tool_calls=Counter(
                "chatbot_tool_calls",
                "MCP tool calls the model asked for, by server, tool and outcome (ok, error, timeout, "
                "unavailable, not_offered, bad_arguments, declined, cancelled).",
                ["server", "tool", "outcome"],
                registry=registry,
            ),
            tool_seconds=Histogram(
                "chatbot_tool_seconds",
                "Time from a tool call sent to the MCP server to its result.",
                ["server", "tool"],
                buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
                registry=registry,
            ),
            tool_approvals=Counter(
                "chatbot_tool_approvals",
                "Tool calls that needed the asker's approval, by decision.",
                ["decision"],
                registry=registry,
            ),
            answers_again=Counter(
                "chatbot_answers_again",
                "Questions edited while being answered or after the last answer: answered again in place.",
                ["platform"],
                registry=registry,
            ),
            feedback=Counter(
                "chatbot_feedback",
                "Votes on answers (value: up, down), each person's once per answer, by the persona "
                "preset and the model that answered; a changed mind is chatbot_feedback_changes.",
                ["platform", "persona", "model", "value"],
                registry=registry,
            ),
            feedback_changes=Counter(
                "chatbot_feedback_changes",
                "Changed minds: a person's vote on an answer replaced by the other value (its new value).",
                ["platform", "persona", "model", "value"],
                registry=registry,
            ),
            discord_shard_connected=Gauge(
                "chatbot_discord_shard_connected",
                "1 while this process's Discord gateway shard is connected, else 0.",
                ["shard"],
                registry=registry,
            ),
            discord_shard_latency=Gauge(
                "chatbot_discord_shard_latency_seconds",
                "Time from a gateway heartbeat to its acknowledgement, per shard "
                "(+Inf until the first one).",
                ["shard"],
                registry=registry,
            ),
            model_fallbacks=Counter(
                "chatbot_model_fallbacks",
                "Answers that moved on from one model of the chain to the next, before the first token "
                "(to: none when no model was left), by reason: unavailable (refused, reset, an error "
                "before any text), server_error, timeout, not_found, rate_limited, capability, breaker_open.",
                ["from", "to", "reason"],
                registry=registry,
            ),
            model_breaker=Gauge(
                "chatbot_model_breaker_state",
                "Each model's breaker as this process last saw it: 0 closed, 1 open (skipped), "
                "2 half open (one request probes it).",
                ["model"],
                registry=registry,
            ),
            model_tokens=Counter(
                "chatbot_model_tokens",
                "Model tokens used, by the model that answered and direction (in, out).",
                ["model", "direction"],
                registry=registry,
            ),
            summaries=Counter(
                "chatbot_summaries", "Summaries asked for, by what (thread, channel, conversation) and "
                "how they ended.", ["platform", "kind", "outcome"], registry=registry,
            ),
            summary_messages=Counter(
                "chatbot_summary_messages_read", "Messages read by summaries.", ["platform", "kind"],
                registry=registry,
            ),
            summary_requests=Histogram(
                "chatbot_summary_model_requests", "Model requests one summary made (map-reduce parts).",
                ["platform"], buckets=(1, 2, 3, 5, 8, 13, 20, 30, 40, 60), registry=registry,
            ),
        )


_current = Metrics.create()


def current() -> Metrics:
    """The metrics in force (the ones `/metrics` serves)."""
    return _current


def reset() -> Metrics:
    """Start from a fresh registry (tests); returns the new metrics."""
    global _current
    _current = Metrics.create()
    return _current


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The metrics and their content type, in the format the scraper's `Accept` header
    asks for (Prometheus text 0.0.4 when it names none, OpenMetrics when it prefers it)."""
    encode, content_type = choose_encoder(accept or "")
    return encode(_current.registry), content_type


# ---- the calls the engine and the adapters make ---------------------------------------


def answer_finished(
    platform: str,
    outcome: str,
    tokens_in: int = 0,
    tokens_out: int = 0,
    ttft_s: float | None = None,
    total_s: float | None = None,
) -> None:
    """One answer is over. `ttft_s` is None when no token came (an error before the
    stream); `total_s` is None when no final text was written (e.g. a limit message)."""
    m = _current
    m.answers.labels(platform, outcome).inc()
    if tokens_in:
        m.tokens.labels(platform, "in").inc(tokens_in)
    if tokens_out:
        m.tokens.labels(platform, "out").inc(tokens_out)
    if ttft_s is not None:
        m.time_to_first_token.labels(platform).observe(ttft_s)
    if total_s is not None:
        m.answer_duration.labels(platform).observe(total_s)


def platform_write(platform: str, method: str, status: str | int) -> None:
    """One platform API write. `status` is "ok", a status code such as 429, or "error"."""
    _current.platform_writes.labels(platform, method, str(status)).inc()


def model_error(kind: str) -> None:
    """One failed chat completions call (each retry counts), by `LLMError.kind`:
    "rate_limited", "unavailable", "timeout", "interrupted", "auth"…"""
    _current.model_errors.labels(kind).inc()


def redis_error(operation: str = "command") -> None:
    """One Redis command or pipeline that raised."""
    _current.redis_errors.labels(operation).inc()


def limited(platform: str, reason: str) -> None:
    """A message got a limit message instead of a model call ("user_rate", "channel_tokens",
    "input_length", …)."""
    _current.limited.labels(platform, reason).inc()


def orphan_marked(platform: str) -> None:
    """An answer left half-written by a dead process was marked as interrupted."""
    _current.orphans_marked.labels(platform).inc()


def pacing(platform: str, window: str, kind: str) -> None:
    """One draw on a shared write budget (see `bot.delivery.pacing`)."""
    _current.pacing.labels(platform, window, kind).inc()


def pacing_budget_used(platform: str, window: str, share: float) -> None:
    _current.pacing_budget_used.labels(platform, window).set(share)


def pacing_throttled(platform: str, window: str) -> None:
    pacing(platform, window, "throttled")


def pacing_fallback(platform: str, kind: str) -> None:
    """An answer's final text took the fallback way: "whole_text" or "repost"."""
    _current.pacing_fallbacks.labels(platform, kind).inc()


def progress_part(platform: str) -> None:
    """An answer's text went on in a message of its own while the model wrote."""
    _current.progress_parts.labels(platform).inc()


def progress_longest_wait(platform: str, seconds: float) -> None:
    _current.progress_longest_wait.labels(platform).observe(seconds)


def set_redis_degraded(degraded: bool) -> None:
    _current.redis_degraded.set(1 if degraded else 0)


def degraded_answer(platform: str) -> None:
    """An answer was given while Redis was unreachable."""
    _current.degraded_answers.labels(platform).inc()


def after_answer_failure(stage: str) -> None:
    """Something failed once the answer's final text had landed ("store", "usage", …)."""
    _current.after_answer_failures.labels(stage).inc()


def stop_pressed(platform: str, result: str) -> None:
    """A Stop press: "stopped" or "refused"."""
    _current.stops.labels(platform, result).inc()


def tool_approval(decision: str) -> None:
    _current.tool_approvals.labels(decision).inc()


def tool_call(server: str, tool: str, outcome: str, seconds: float | None) -> None:
    _current.tool_calls.labels(server, tool, outcome).inc()
    if seconds is not None:
        _current.tool_seconds.labels(server, tool).observe(seconds)


def answered_again(platform: str) -> None:
    """A person edited the question being answered (or answered last): answered again in place."""
    _current.answers_again.labels(platform).inc()


def feedback_given(platform: str, persona: str, model: str, value: str) -> None:
    """A person's first vote ("up" or "down") on an answer of `persona` (its preset) and `model`."""
    _current.feedback.labels(platform, persona, model, value).inc()


def feedback_changed(platform: str, persona: str, model: str, value: str) -> None:
    """A person's vote on an answer replaced by `value`, the other one."""
    _current.feedback_changes.labels(platform, persona, model, value).inc()


def watch_discord_shard(shard: int, connected: Callable[[], bool], latency: Callable[[], float]) -> None:
    """Serve a shard's connection and heartbeat latency, read when `/metrics` is scraped."""
    _current.discord_shard_connected.labels(str(shard)).set_function(lambda: float(connected()))
    _current.discord_shard_latency.labels(str(shard)).set_function(latency)


def model_fallback(from_model: str, to_model: str, reason: str) -> None:
    """The chain moved on from `from_model` to `to_model` ("none": no model was left)."""
    _current.model_fallbacks.labels(from_model, to_model, reason).inc()


_BREAKER_VALUES = {"closed": 0.0, "open": 1.0, "probing": 2.0, "half_open": 2.0}


def model_breaker_state(model: str, state: str) -> None:
    _current.model_breaker.labels(model).set(_BREAKER_VALUES.get(state, 0.0))


def model_tokens(model: str, tokens_in: int, tokens_out: int) -> None:
    """The tokens of one answer, counted against the model that gave it."""
    if tokens_in:
        _current.model_tokens.labels(model, "in").inc(tokens_in)
    if tokens_out:
        _current.model_tokens.labels(model, "out").inc(tokens_out)


@contextmanager
def live_stream(platform: str) -> Iterator[None]:
    """Count one answer as live while the block runs, whatever way it leaves.

    The gauge object is taken once, so a `reset()` meanwhile cannot unbalance the new one.
    """
    gauge = _current.live_streams.labels(platform)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def summary_finished(platform: str, kind: str, outcome: str, messages_read: int, requests: int) -> None:
    _current.summaries.labels(platform, kind, outcome).inc()
    if messages_read:
        _current.summary_messages.labels(platform, kind).inc(messages_read)
    if requests:
        _current.summary_requests.labels(platform).observe(requests)
