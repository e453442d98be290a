"""Chat completions client (Together, or any OpenAI-compatible server) over httpx.

`LLMClient.stream` yields `Delta`s as the Server-Sent Events arrive. Failures
become `LLMError` subclasses whose `user_message` is safe to show in a chat;
the server's own error text is kept in `detail` for the logs.

Retries (429, 5xx, timeouts, connection errors) happen only before the first
delta is yielded: once text may be on screen, a retry would show it twice.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx

from bot.clock import Clock, SystemClock
from bot.config import ModelSettings
from bot.ops import metrics

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 30.0  # never wait longer than this for one retry, whatever the server says
MIN_ATTEMPT = 1.0  # a retry that would get less than this before the deadline is not made


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: Sequence[dict[str, Any]]  # content: text, or OpenAI-style parts (images)
    temperature: float | None = None
    max_tokens: int | None = None
    reasoning: bool | None = None
    tools: Sequence[dict[str, Any]] = ()  # OpenAI-compatible function tools (bot/tools/loop.py)

    def body(self, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": list(self.messages), "stream": stream}
        if self.tools:
            body["tools"] = list(self.tools)
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.reasoning is not None:
            body["reasoning"] = {"enabled": self.reasoning}
        return body


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class ToolCallPiece:
    """A piece of a streamed tool call: its `index` ties the pieces together; the id and name
    come first, the arguments (JSON text) in pieces after."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True)
class Delta:
    """One step of a streamed answer. Any field may be empty."""

    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str = ""  # the model the provider says answered (the chunk's `model`), for traces
    tool_calls: tuple[ToolCallPiece, ...] = ()


@dataclass(frozen=True)
class Completion:
    content: str
    reasoning: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


# -- errors -------------------------------------------------------------------


@dataclass(eq=False)
class LLMError(Exception):
    """A model API failure. `user_message` may be shown to anyone; `detail` is for logs."""

    user_message: str = "The model is unavailable right now. Please try again in a moment."
    status: int | None = None
    detail: str = ""
    retry_after: float | None = None
    kind: ClassVar[str] = "error"
    retryable: ClassVar[bool] = False

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{self.kind}{status}: {self.detail or self.user_message}"


class BadRequest(LLMError):
    kind = "bad_request"


class AuthError(LLMError):
    kind = "auth"


class PaymentRequired(LLMError):
    kind = "payment"


class ContextTooLong(LLMError):
    kind = "context_length"


class NotFound(LLMError):
    kind = "not_found"


class RequestTooLarge(LLMError):
    """The request's body is over MODEL_REQUEST_MAX_BYTES, or the server said 413: the same
    request can only fail again, so it is never retried."""

    kind = "too_large"


class RateLimited(LLMError):
    kind = "rate_limited"
    retryable = True


class Unavailable(LLMError):
    kind = "unavailable"
    retryable = True


class Timeout(LLMError):
    kind = "timeout"
    retryable = True


class StreamInterrupted(LLMError):
    """The stream stopped before the answer was complete (after text arrived)."""

    kind = "interrupted"


def error_for_status(status: int, detail: str, retry_after: float | None) -> LLMError:
    """Map an HTTP error to the typed error people and operators need to see."""
    if status in (400, 422):
        return BadRequest(
            f"The model API rejected the request ({status}). An operator should check the logs.",
            status, detail,
        )
    if status == 401:
        return AuthError(
            "The model API key was refused (401). An operator needs to check TOGETHER_API_KEY.",
            status, detail,
        )
    if status == 402:
        return PaymentRequired(
            "The model API account is out of credits (402). An operator needs to top it up.",
            status, detail,
        )
    if status == 403:
        return ContextTooLong(
            "This conversation is too long for the model (403). Start a new thread or use /forget.",
            status, detail,
        )
    if status == 404:
        return NotFound(
            "The model API does not know this model or URL (404). An operator should check "
            "BOT_MODEL, the persona's model and TOGETHER_BASE_URL.",
            status, detail,
        )
    if status == 413:
        return RequestTooLarge(
            "The model API refused the request as too large (413). Please send smaller files.",
            status, detail,
        )
    if status == 429:
        return RateLimited(
            "The model is rate limited (429). Please try again in a minute.",
            status, detail, retry_after,
        )
    return Unavailable(
        f"The model is unavailable right now ({status}). Please try again in a moment.",
        status, detail, retry_after,
    )


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait before retrying, from `Retry-After` or Together's `x-ratelimit-reset`."""
    for name in ("retry-after", "x-ratelimit-reset"):
        raw = headers.get(name)
        if not raw:
            continue
        try:
            seconds = float(raw)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(raw).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
        if seconds > 1e9:  # an epoch timestamp rather than a delay
            seconds -= time.time()
        return min(max(seconds, 0.0), MAX_RETRY_AFTER)
    return None


def _error_detail(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:300].decode("utf-8", "replace")
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if isinstance(error, str):
        return error
    return str(data)[:300]


# -- parsing ------------------------------------------------------------------

FINISH_ALIASES = {"eos": "stop", "eos_token": "stop", "stop_sequence": "stop"}


def parse_chunk(data: dict[str, Any]) -> Delta:
    """Turn one `chat.completion.chunk` into a Delta (empty when it carries nothing)."""
    content = reasoning = ""
    calls: tuple[ToolCallPiece, ...] = ()
    finish: str | None = data.get("finish_reason") if isinstance(data.get("finish_reason"), str) else None
    choices = data.get("choices") or []
    if choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta") or choice.get("message") or {}
        content = delta.get("content") or ""
        reasoning = delta.get("reasoning") or delta.get("reasoning_content") or ""
        calls = _tool_call_pieces(delta.get("tool_calls"))
        finish = choice.get("finish_reason") or finish
    usage_raw = data.get("usage")
    usage = None
    if isinstance(usage_raw, dict):
        usage = Usage(
            prompt_tokens=int(usage_raw.get("prompt_tokens") or 0),
            completion_tokens=int(usage_raw.get("completion_tokens") or 0),
        )
    if finish:
        finish = FINISH_ALIASES.get(finish, finish)
    model = data.get("model")
    return Delta(content=content, reasoning=reasoning, finish_reason=finish, usage=usage,
                 model=model if isinstance(model, str) else "", tool_calls=calls)


def _tool_call_pieces(raw: Any) -> tuple[ToolCallPiece, ...]:
    if not isinstance(raw, list):
        return ()
    pieces = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict):
            continue
        raw_function = item.get("function")
        function: dict[str, Any] = raw_function if isinstance(raw_function, dict) else {}
        index = item.get("index")
        pieces.append(ToolCallPiece(
            index=index if isinstance(index, int) else position,
            id=str(item.get("id") or ""), name=str(function.get("name") or ""),
            arguments=str(function.get("arguments") or ""),
        ))
    return tuple(pieces)


DONE = object()


def parse_sse_line(line: str) -> dict[str, Any] | object | None:
    """One line of the event stream: a chunk dict, `DONE`, or None for anything else."""
    if not line.startswith("data:"):
        return None  # blank separators, `: keep-alive` comments, event:/id: fields
    payload = line[5:].strip()
    if payload == "[DONE]":
        return DONE
    if not payload:
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        log.warning("skipping a malformed stream line (%d bytes)", len(payload))
        return None
    if isinstance(data, dict) and "error" in data and not data.get("choices"):
        raise Unavailable(detail=_error_detail(payload.encode()))
    return data if isinstance(data, dict) else None


# -- client -------------------------------------------------------------------


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, made once per process: loading the CA bundle costs tens of
    ms of CPU, and every client (the model client of each engine, the preflight check) would load it again."""
    return httpx.create_ssl_context()


class LLMClient:
    """One pooled HTTP client per process, shared by every conversation."""

    def __init__(
        self, settings: ModelSettings, http: httpx.AsyncClient | None = None, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        # The timeouts and back-offs are seconds of this clock (docs/architecture.md, "Time");
        # deadlines stay `time.monotonic()` times, as the platform event's arrival is one.
        self.clock: Clock = clock or SystemClock()
        self.url = f"{settings.base_url.rstrip('/')}/chat/completions"
        self._http = http or httpx.AsyncClient(
            # Read pacing is enforced per line below (first token, then idle gap);
            # httpx's own read timeout is only a backstop.
            timeout=httpx.Timeout(
                connect=settings.connect_timeout,
                read=max(settings.first_token_timeout, settings.idle_timeout) + 5,
                write=30.0,
                pool=30.0,
            ),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            verify=tls_context(),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        return headers

    def _backoff(self, attempt: int, error: LLMError) -> float:
        if error.retry_after is not None:
            return error.retry_after
        cap = self.settings.retry_base_delay * (2**attempt)
        return random.uniform(cap / 2, cap)  # jitter keeps replicas from retrying in step

    async def stream(
        self, request: ChatRequest, *, deadline: float | None = None, retries: int | None = None
    ) -> AsyncIterator[Delta]:
        """Yield deltas until the answer is finished; raise LLMError on failure.

        `deadline` (a `time.monotonic()` time; default: `first_token_budget` of the clock from now)
        bounds the wait for the first delta across every attempt and back-off together,
        so a silent model costs the person at most that long before they hear why.
        `retries` (default `max_retries`): the fallback chain makes its own (bot/model/fallback.py).
        """
        s = self.settings
        max_retries = s.max_retries if retries is None else retries
        if deadline is None:
            deadline = time.monotonic() + self.clock.real(s.first_token_budget)
        attempt = 0
        while True:
            yielded = False
            try:
                async for delta in self._stream_once(request, deadline):
                    yielded = True
                    yield delta
                return
            except LLMError as error:
                metrics.model_error(error.kind)  # each failed attempt, retried or not
                if yielded or not error.retryable or attempt >= max_retries:
                    raise
                delay = self._backoff(attempt, error)
                left = deadline - time.monotonic()
                if self.clock.real(delay) >= left - self.clock.real(min(MIN_ATTEMPT, s.first_token_timeout)):
                    # No time left for another honest try: say so now rather than at the deadline.
                    raise
                log.warning("model API %s; retry %d in %.2fs", error, attempt + 1, delay)
                attempt += 1
                await self.clock.sleep(delay)

    async def _stream_once(self, request: ChatRequest, deadline: float) -> AsyncIterator[Delta]:
        s = self.settings
        finished = False
        got_text = False
        response: httpx.Response | None = None
        try:
            http_request = self._http.build_request(
                "POST", self.url, json=request.body(stream=True), headers=self._headers()
            )
            if len(http_request.content) > s.request_max_bytes:  # the engine fits requests: a backstop
                raise RequestTooLarge(
                    "That request is too large for the model. Please send smaller files.",
                    detail=f"{len(http_request.content):,} bytes, over MODEL_REQUEST_MAX_BYTES",
                )
            # Until the first delta, the whole exchange (connect, headers, silence) is bounded
            # by the turn's deadline: a server that accepts and never answers costs no more.
            # One attempt waits at most `first_token_timeout`, and never past the deadline.
            attempt_deadline = min(deadline, time.monotonic() + self.clock.real(s.first_token_timeout))
            async with asyncio.timeout(max(0.0, attempt_deadline - time.monotonic())):
                response = await self._http.send(http_request, stream=True)
            if response.status_code >= 400:
                body = await response.aread()
                raise error_for_status(
                    response.status_code, _error_detail(body), _retry_after(response.headers)
                )
            lines = response.aiter_lines()
            while True:
                timeout = self.clock.real(s.idle_timeout) if got_text else attempt_deadline - time.monotonic()
                try:
                    async with asyncio.timeout(max(timeout, 0.0)):
                        line = await anext(lines)
                except StopAsyncIteration:
                    break
                item = parse_sse_line(line)
                if item is DONE:
                    finished = True
                    break
                if not isinstance(item, dict):
                    continue
                delta = parse_chunk(item)
                if delta.content or delta.reasoning or delta.tool_calls:
                    got_text = True
                if delta.finish_reason:
                    finished = True
                if delta.content or delta.reasoning or delta.finish_reason or delta.usage or delta.tool_calls:
                    yield delta
        except TimeoutError:
            if got_text:
                raise StreamInterrupted(
                    "The model stopped sending mid-answer.", detail="idle timeout between chunks"
                ) from None
            raise Timeout(
                "The model took too long to answer. Please try again in a moment.",
                detail="no first token in time",
            ) from None
        except httpx.TimeoutException as exc:
            raise Timeout(
                "The model took too long to answer. Please try again in a moment.",
                detail=type(exc).__name__,
            ) from None
        except httpx.TransportError as exc:
            if got_text:
                raise StreamInterrupted(
                    "The connection to the model dropped mid-answer.", detail=type(exc).__name__
                ) from None
            raise Unavailable(
                "The model API could not be reached. Please try again in a moment.",
                detail=f"{type(exc).__name__}: {exc}",
            ) from None
        finally:
            if response is not None:
                await response.aclose()
        if not finished:
            error_class = StreamInterrupted if got_text else Unavailable
            raise error_class(
                "The model's answer was cut off." if got_text else
                "The model API closed the connection without answering. Please try again.",
                detail="stream ended without [DONE] or finish_reason",
            )

    async def complete(self, request: ChatRequest) -> Completion:
        """A non-streaming call (used by `python -m bot check`), with the same retries."""
        attempt = 0
        while True:
            try:
                return await self._complete_once(request)
            except LLMError as error:
                if not error.retryable or attempt >= self.settings.max_retries:
                    raise
                delay = self._backoff(attempt, error)
                attempt += 1
                await self.clock.sleep(delay)

    async def _complete_once(self, request: ChatRequest) -> Completion:
        headers = self._headers() | {"Accept": "application/json"}
        try:
            response = await self._http.post(self.url, json=request.body(stream=False), headers=headers)
        except httpx.TimeoutException as exc:
            raise Timeout(detail=type(exc).__name__) from None
        except httpx.TransportError as exc:
            raise Unavailable(
                "The model API could not be reached.", detail=f"{type(exc).__name__}: {exc}"
            ) from None
        if response.status_code >= 400:
            raise error_for_status(
                response.status_code, _error_detail(response.content), _retry_after(response.headers)
            )
        try:
            delta = parse_chunk(response.json())
        except ValueError:
            raise Unavailable(detail="the completion was not JSON") from None
        return Completion(delta.content, delta.reasoning, delta.finish_reason, delta.usage)
