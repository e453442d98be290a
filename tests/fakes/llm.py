"""A fake chat completions server: real HTTP on loopback, real Server-Sent Events.

It streams in the shape of a recorded Together stream, `tests/data/together-stream.sse`
(the closing chunk carries the last token *and* `finish_reason` + `usage`), or with
the finish on a separate empty chunk, and can fail in each way the real API does.

    async with FakeLLM() as llm:
        llm.answer = Answer.words(200, tokens_per_second=20)
        llm.fail_next("429", retry_after=0)
        ...  # point TOGETHER_BASE_URL at llm.url
        llm.requests[0]["messages"]
        llm.script = lambda asked: Answer.words(20, tag=asked[-3:])  # an answer per request
        llm.stream_for("question 7").last_token  # when its last token left
        llm.fail_model("a/model", "503", times=None)  # requests naming that model fail, every one
        llm.without("text/model", "images")  # a 400 for requests to it that carry images

Run it standalone for the benchmarks, or for a bot in another process:
    .venv/bin/python -m tests.fakes.llm --port 8099 --words 50 --rate 20
    TOGETHER_API_KEY=x TOGETHER_BASE_URL=http://127.0.0.1:8099/v1 ./scripts/bot chat
(`./scripts/bot chat --fake` runs it inside the chat, on a free port.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import serve
from tests.support.clock import REAL_TIME, FastClock

FAILURES = ("429", "500", "503", "401", "402", "403", "404", "cut", "stall", "hang", "error_event", "reset")


@dataclass
class Answer:
    """What the fake streams. `tokens` are sent one per chunk."""

    tokens: list[str] = field(default_factory=lambda: ["Hello", " there", "!"])
    tokens_per_second: float | None = None  # None = as fast as possible
    first_token_delay: float = 0.0
    reasoning: list[str] = field(default_factory=list)
    finish_on_separate_chunk: bool = False
    finish_reason: str = "stop"
    # Tool calls after the tokens, as (name, arguments JSON) in the OpenAI/Together shape: the
    # id and name in one chunk, the arguments in pieces, then finish_reason "tool_calls".
    tool_calls: list[tuple[str, str]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @classmethod
    def words(cls, n: int, *, tag: str = "", **kwargs: Any) -> Answer:
        """Deterministic numbered words, so a test can compare texts exactly; `tag` makes
        them unique to one answer (`tag.w1 tag.w2 …`), so a message is told apart by its text."""
        prefix = f"{tag}." if tag else ""
        return cls(tokens=[("" if i == 0 else " ") + f"{prefix}w{i + 1}" for i in range(n)], **kwargs)

    @classmethod
    def tagged(cls, n: int, tag: str, **kwargs: Any) -> Answer:
        """`n` tokens of about four characters, as a model's are: the tag, then short words
        drawn from a generator seeded by the tag, so any few words of it belong to this
        answer alone (a 200-token answer is about 900 characters, as a real one is)."""
        rng = random.Random(tag)
        letters = "abcdefghijklmnopqrstuvwxyz"
        words = ["".join(rng.choices(letters, k=3)) for _ in range(n - 1)]
        return cls(tokens=[tag, *(" " + word for word in words)], **kwargs)

    @classmethod
    def of(cls, text: str, chunk: int = 4, **kwargs: Any) -> Answer:
        """Stream a given text in chunks of `chunk` characters."""
        return cls(tokens=[text[i : i + chunk] for i in range(0, len(text), chunk)], **kwargs)


@dataclass
class StreamLog:
    """One streamed answer's timeline (time.monotonic(), comparable across processes on Linux)."""

    last_user_message: str
    arrived: float  # the request arrived
    first_token: float | None = None  # the first content token was sent
    last_token: float | None = None  # the last one was sent (the answer is complete)
    text: str = ""  # the whole answer streamed
    sent: int = 0  # content tokens written so far
    gone: float | None = None  # the client went away before the answer was complete


@dataclass
class Failure:
    kind: str
    retry_after: float | None = None


_ARRIVED = web.RequestKey("arrived", float)


class FakeLLM:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, clock: FastClock = REAL_TIME) -> None:
        self.host = host
        self.port = port
        self.clock = clock  # paces the tokens and times the records (tests/support/clock.py)
        self.answer = Answer()
        # When set, the answer to each streamed request, from its last user message
        # (`answer` is used otherwise): lets a test give every conversation its own text.
        self.script: Callable[[str], Answer] | None = None
        self.requests: list[dict[str, Any]] = []
        self.request_times: list[float] = []  # clock.monotonic() when each request arrived
        self.first_token_times: list[float] = []
        self.last_token_times: list[float] = []
        self.statuses: list[int] = []
        self.streams: list[StreamLog] = []
        self.api_key: str | None = None  # when set, other keys get 401
        self.max_body: int | None = None  # when set, larger bodies get 413, as a real API's limit
        self.body_sizes: list[int] = []  # bytes of each request's body
        self._failures: deque[Failure] = deque()
        # Per model (the request's `model`): failures (None: every request), what it cannot take.
        self._model_failures: dict[str, tuple[Failure, int | None]] = {}
        self._lacks: dict[str, set[str]] = {}
        self._runner: web.AppRunner | None = None
        self._hanging: list[asyncio.Event] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def stream_for(self, needle: str) -> StreamLog | None:
        """The latest stream whose last user message contains `needle`."""
        for log in reversed(self.streams):
            if needle in log.last_user_message:
                return log
        return None

    def fail_next(self, kind: str, times: int = 1, retry_after: float | None = None) -> None:
        if kind not in FAILURES:
            raise ValueError(f"unknown failure {kind!r}; use one of {FAILURES}")
        self._failures.extend(Failure(kind, retry_after) for _ in range(times))

    def fail_model(self, model: str, kind: str, times: int | None = None,
                   retry_after: float | None = None) -> None:
        """Requests naming `model` fail with `kind`: the next `times`, or every one (None)."""
        if kind not in FAILURES:
            raise ValueError(f"unknown failure {kind!r}; use one of {FAILURES}")
        self._model_failures[model] = (Failure(kind, retry_after), times)

    def heal(self, model: str) -> None:
        self._model_failures.pop(model, None)

    def without(self, model: str, capability: str) -> None:
        """`model` answers 400 to requests that need `capability` ("images"), as a text-only model does."""
        self._lacks.setdefault(model, set()).add(capability)

    def asked(self, model: str) -> int:
        """How many requests named `model`."""
        return sum(1 for body in self.requests if body.get("model") == model)

    def _model_failure(self, body: dict[str, Any]) -> Failure | None:
        model = str(body.get("model"))
        if model not in self._model_failures:
            model = "*"  # `fail_model("*", …)`: whatever the model
        entry = self._model_failures.get(model)
        if entry is None:
            return None
        failure, times = entry
        if times is not None:
            if times <= 1:
                del self._model_failures[model]
            else:
                self._model_failures[model] = (failure, times - 1)
        return failure

    async def __aenter__(self) -> FakeLLM:
        app = web.Application(client_max_size=256 * 1024 * 1024)  # aiohttp's 1 MB would answer 413 itself
        for path in ("/v1/chat/completions", "/chat/completions"):
            app.router.add_post(path, self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/_streams", self._stream_logs)  # for benchmarks in another process
        self._runner, self.port = await serve(app, self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for event in self._hanging:
            event.set()
        if self._runner:
            await self._runner.cleanup()

    # -- the endpoint -----------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Invalid API key provided", "invalid_api_key")
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def _stream_logs(self, request: web.Request) -> web.Response:
        return web.json_response([vars(log) for log in self.streams])

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        arrived = self.clock.monotonic()
        request[_ARRIVED] = arrived
        raw = await request.read()
        self.body_sizes.append(len(raw))
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(400, "request body is not JSON")
        self.requests.append(body)
        self.request_times.append(arrived)
        auth = request.headers.get("Authorization", "")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return self._error(401, "Invalid API key provided", "invalid_api_key")
        if self.max_body is not None and len(raw) > self.max_body:
            return self._error(413, f"request body over {self.max_body} bytes", "request_too_large")
        if "images" in self._lacks.get(str(body.get("model")), set()) and _has_images(body):
            return self._error(400, f"Model {body.get('model')} does not support image inputs.")
        if "tools" in self._lacks.get(str(body.get("model")), set()) and body.get("tools"):
            return self._error(400, f"Model {body.get('model')} does not support tool calling.")
        failure = self._model_failure(body) or (self._failures.popleft() if self._failures else None)
        if failure is not None:
            response = await self._fail(request, failure)
            if response is not None:
                return response
        if not body.get("stream"):
            return self._complete()
        return await self._stream(request, body, cut=False)

    def _error(
        self, status: int, message: str, kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        self.statuses.append(status)
        payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return web.json_response(payload, status=status, headers=headers)

    async def _fail(self, request: web.Request, failure: Failure) -> web.StreamResponse | None:
        kind = failure.kind
        if kind == "429":
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            return self._error(429, "rate limit exceeded", "rate_limit", headers)
        if kind in ("500", "503", "401", "402", "403", "404"):
            messages = {
                "500": "internal error", "503": "service overloaded", "401": "Invalid API key",
                "402": "credit limit exceeded", "403": "input too long for context length",
                "404": "model not found",
            }
            return self._error(int(kind), messages[kind])
        if kind == "reset":  # the connection dropped before any answer
            transport = request.transport
            if transport is not None:
                transport.abort()
            return web.Response(status=500)
        if kind == "hang":  # never answer at all
            event = asyncio.Event()
            self._hanging.append(event)
            await event.wait()
            return self._error(503, "shutting down")
        if kind == "stall":  # headers sent, then silence
            response = await self._start_sse(request)
            event = asyncio.Event()
            self._hanging.append(event)
            await event.wait()
            return response
        if kind == "error_event":
            response = await self._start_sse(request)
            await response.write(b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n')
            return response
        if kind == "cut":
            body = await request.json()
            return await self._stream(request, body, cut=True)
        return None

    async def _start_sse(self, request: web.Request) -> web.StreamResponse:
        self.statuses.append(200)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        return response

    def _chunk(self, content: str | None, *, reasoning: str | None = None,
               finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
        delta: dict[str, Any] = {}
        if content is not None:
            delta["content"] = content
        if reasoning is not None:
            delta["reasoning"] = reasoning
        choice: dict[str, Any] = {"index": 0, "delta": delta}
        if finish:
            choice["finish_reason"] = finish
        chunk = {
            "id": "fake-1", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": "fake", "choices": [choice], "finish_reason": finish, "usage": usage,
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    async def _stream(self, request: web.Request, body: dict[str, Any], cut: bool) -> web.StreamResponse:
        messages = body.get("messages") or [{}]
        content = messages[-1].get("content", "")
        if isinstance(content, list):  # OpenAI-style parts (text and images): the text is the question
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        asked = str(content)
        answer = self.script(asked) if self.script is not None else self.answer
        # Logged before the first await: concurrent requests must not swap arrival times.
        log = StreamLog(asked, arrived=request.get(_ARRIVED, self.clock.monotonic()), text=answer.text)
        self.streams.append(log)
        response = await self._start_sse(request)
        # The client may go away mid-answer (a chat's Ctrl-C, a Stop, a test's cut): not our error.
        try:
            await self._write_answer(request, response, body, answer, log, cut)
        except ConnectionResetError:
            log.gone = self.clock.monotonic()
        except asyncio.CancelledError:
            log.gone = self.clock.monotonic()
            raise
        return response

    async def _write_answer(
        self,
        request: web.Request,
        response: web.StreamResponse,
        body: dict[str, Any],
        answer: Answer,
        log: StreamLog,
        cut: bool,
    ) -> None:
        if answer.first_token_delay:
            await self.clock.sleep(answer.first_token_delay)
        await response.write(b": keep-alive\n\n")
        interval = 1.0 / answer.tokens_per_second if answer.tokens_per_second else 0.0
        for piece in answer.reasoning:
            await response.write(self._chunk(None, reasoning=piece))
        tokens = answer.tokens[: max(1, len(answer.tokens) // 2)] if cut else answer.tokens
        log.text = "".join(tokens)
        usage = {
            "prompt_tokens": sum(len(str(m.get("content", ""))) // 4 for m in body.get("messages", [])),
            "completion_tokens": len(answer.tokens),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        start = self.clock.monotonic()
        for i, token in enumerate(tokens):
            if interval:
                # Pace against the start time so the rate holds however long writes take.
                delay = start + i * interval - self.clock.monotonic()
                if delay > 0:
                    await self.clock.sleep(delay)
            closing = i == len(tokens) - 1 and not cut and not answer.finish_on_separate_chunk
            if i == 0:
                log.first_token = self.clock.monotonic()
                self.first_token_times.append(log.first_token)
            await response.write(
                self._chunk(token, finish=answer.finish_reason if closing else None,
                            usage=usage if closing else None)
            )
            log.sent = i + 1
        if answer.tool_calls and not cut:
            await self._write_tool_calls(response, answer, usage)
            log.last_token = self.clock.monotonic()  # the calls are complete in the stream
            return
        log.last_token = self.clock.monotonic()
        self.last_token_times.append(log.last_token)
        if cut:
            # Drop the connection without a finish chunk or [DONE].
            transport = request.transport
            if transport is not None:
                transport.close()
            return
        if answer.finish_on_separate_chunk:
            await response.write(self._chunk("", finish=answer.finish_reason, usage=usage))
        await response.write(b"data: [DONE]\n\n")

    async def _write_tool_calls(
        self, response: web.StreamResponse, answer: Answer, usage: dict[str, int]
    ) -> None:
        def chunk(
            delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None
        ) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            data = {"id": "fake-1", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": "fake", "choices": [choice], "usage": usage}
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        for index, (name, arguments) in enumerate(answer.tool_calls):
            await response.write(chunk({"tool_calls": [{
                "index": index, "id": f"call_{len(self.requests)}_{index}", "type": "function",
                "function": {"name": name, "arguments": ""}}]}))
            for start in range(0, len(arguments), 5):
                await response.write(chunk({"tool_calls": [{
                    "index": index, "function": {"arguments": arguments[start:start + 5]}}]}))
        await response.write(chunk({}, finish="tool_calls", usage=usage))
        await response.write(b"data: [DONE]\n\n")

    def _complete(self) -> web.Response:
        self.statuses.append(200)
        text = self.answer.text
        return web.json_response({
            "id": "fake-1", "object": "chat.completion", "created": int(time.time()), "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": self.answer.finish_reason}],
            "usage": {"prompt_tokens": 1, "completion_tokens": len(self.answer.tokens),
                      "total_tokens": 1 + len(self.answer.tokens)},
        })


def _has_images(body: dict[str, Any]) -> bool:
    return any(
        isinstance(m.get("content"), list) and any(p.get("type") == "image_url" for p in m["content"])
        for m in body.get("messages") or []
    )


async def _serve(
    port: int, words: int, rate: float | None, first_token_delay: float = 0.0, fail: str | None = None
) -> None:
    async with FakeLLM(port=port) as llm:
        llm.answer = Answer.words(words, tokens_per_second=rate, first_token_delay=first_token_delay)
        if fail:
            llm.fail_model("*", fail)
        print(f"fake model API on {llm.url} (TOGETHER_BASE_URL={llm.url})", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.llm", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=8099, help="port on 127.0.0.1 (default 8099)")
    parser.add_argument("--words", type=int, default=40, help="numbered words per answer (default 40)")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second (0 = unpaced)")
    parser.add_argument("--first-token-delay", type=float, default=0.0, help="seconds before the first token")
    parser.add_argument("--fail", choices=FAILURES, help="fail every request this way (a model that is down)")
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.words, args.rate or None, args.first_token_delay, args.fail))
