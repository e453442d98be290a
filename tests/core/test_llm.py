"""The model client against the fixture and the fake SSE server."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bot.config import ModelSettings
from bot.model import llm
from bot.model.llm import ChatRequest, Delta, LLMClient, parse_chunk, parse_sse_line
from tests.fakes.llm import Answer, FakeLLM

FIXTURE = Path(__file__).parents[1] / "data" / "together-stream.sse"
REQUEST = ChatRequest(model="test/model", messages=[{"role": "user", "content": "hi"}])


def fast_settings(url: str, **overrides: object) -> ModelSettings:
    base = ModelSettings(api_key="test-key", base_url=url, retry_base_delay=0.01,
                         first_token_timeout=2.0, idle_timeout=1.0, connect_timeout=1.0)
    return replace(base, **overrides)  # type: ignore[arg-type]


async def collect(client: LLMClient, request: ChatRequest = REQUEST) -> list[Delta]:
    return [delta async for delta in client.stream(request)]


def test_fixture_parses_to_text_and_usage() -> None:
    deltas = []
    for line in FIXTURE.read_text().splitlines():
        item = parse_sse_line(line)
        if isinstance(item, dict):
            deltas.append(parse_chunk(item))
        elif item is llm.DONE:
            break
    assert "".join(d.content for d in deltas) == " A: Sure!"
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage == llm.Usage(prompt_tokens=18, completion_tokens=4)


def test_chunk_shapes() -> None:
    assert parse_chunk({"choices": []}) == Delta()
    assert parse_chunk({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).usage
    assert parse_chunk({"choices": [{"delta": {"reasoning_content": "hm"}}]}).reasoning == "hm"
    assert parse_chunk({"choices": [{"delta": {"reasoning": "hm"}}]}).reasoning == "hm"
    assert parse_chunk({"choices": [{"delta": {}, "finish_reason": "eos"}]}).finish_reason == "stop"
    assert parse_sse_line(": keep-alive") is None
    assert parse_sse_line("data: {not json") is None
    assert parse_sse_line("data: [DONE]") is llm.DONE


def test_request_body_per_persona() -> None:
    body = ChatRequest("m", [], temperature=0.2, max_tokens=5, reasoning=False).body(stream=True)
    assert body["reasoning"] == {"enabled": False}
    assert body["temperature"] == 0.2 and body["max_tokens"] == 5 and body["stream"] is True
    assert "reasoning" not in ChatRequest("m", []).body(stream=True)


@pytest.mark.parametrize("separate", [False, True])
async def test_stream_reads_both_endings(separate: bool) -> None:
    async with FakeLLM() as fake:
        fake.answer = Answer.words(30, finish_on_separate_chunk=separate)
        client = LLMClient(fast_settings(fake.url))
        deltas = await collect(client)
        await client.aclose()
    assert "".join(d.content for d in deltas) == fake.answer.text
    assert deltas[-1].finish_reason == "stop" and deltas[-1].usage is not None
    assert fake.requests[0]["stream"] is True


async def test_429_then_success_answers_once() -> None:
    async with FakeLLM() as fake:
        fake.fail_next("429", retry_after=0)
        client = LLMClient(fast_settings(fake.url))
        deltas = await collect(client)
        await client.aclose()
    assert "".join(d.content for d in deltas) == fake.answer.text
    assert fake.statuses == [429, 200]


@pytest.mark.parametrize("status", ["500", "503"])
async def test_repeated_5xx_give_unavailable(status: str) -> None:
    async with FakeLLM() as fake:
        fake.fail_next(status, times=10)
        client = LLMClient(fast_settings(fake.url, max_retries=2))
        with pytest.raises(llm.Unavailable) as caught:
            await collect(client)
        await client.aclose()
    assert len(fake.requests) == 3
    assert status in caught.value.user_message


async def test_repeated_429s_give_rate_limited() -> None:
    async with FakeLLM() as fake:
        fake.fail_next("429", times=10, retry_after=0)
        client = LLMClient(fast_settings(fake.url, max_retries=2))
        with pytest.raises(llm.RateLimited) as caught:
            await collect(client)
        await client.aclose()
    assert len(fake.requests) == 3
    assert "rate limited" in caught.value.user_message


@pytest.mark.parametrize(
    ("failure", "error", "words"),
    [("401", llm.AuthError, "TOGETHER_API_KEY"), ("404", llm.NotFound, "BOT_MODEL"),
     ("402", llm.PaymentRequired, "credits"), ("403", llm.ContextTooLong, "too long")],
)
async def test_client_errors_are_not_retried(failure: str, error: type, words: str) -> None:
    async with FakeLLM() as fake:
        fake.fail_next(failure, times=5)
        client = LLMClient(fast_settings(fake.url))
        with pytest.raises(error) as caught:
            await collect(client)
        await client.aclose()
    assert len(fake.requests) == 1
    assert words in caught.value.user_message
    assert "test-key" not in caught.value.user_message


async def test_cut_stream_raises_interrupted_after_text() -> None:
    async with FakeLLM() as fake:
        fake.answer = Answer.words(10)
        fake.fail_next("cut")
        client = LLMClient(fast_settings(fake.url))
        got: list[str] = []
        with pytest.raises(llm.StreamInterrupted):
            async for delta in client.stream(REQUEST):
                got.append(delta.content)
        await client.aclose()
    assert "".join(got) == "".join(fake.answer.tokens[:5])
    assert len(fake.requests) == 1  # nothing retried once text was shown


async def test_stall_before_first_token_times_out_and_retries() -> None:
    async with FakeLLM() as fake:
        fake.fail_next("stall")
        client = LLMClient(fast_settings(fake.url, first_token_timeout=0.3))
        deltas = await collect(client)
        await client.aclose()
    assert "".join(d.content for d in deltas) == fake.answer.text
    assert len(fake.requests) == 2


async def test_slow_long_answer_is_not_cut_by_idle_timeout() -> None:
    async with FakeLLM() as fake:
        fake.answer = Answer.words(12, tokens_per_second=20)  # 0.6 s in all, 0.05 s gaps
        client = LLMClient(fast_settings(fake.url, idle_timeout=0.3))
        deltas = await collect(client)
        await client.aclose()
    assert "".join(d.content for d in deltas) == fake.answer.text


async def test_unreachable_server_is_unavailable() -> None:
    client = LLMClient(fast_settings("http://127.0.0.1:9/v1", max_retries=1))
    with pytest.raises(llm.Unavailable) as caught:
        await collect(client)
    await client.aclose()
    assert "could not be reached" in caught.value.user_message


async def test_error_event_in_stream() -> None:
    async with FakeLLM() as fake:
        fake.fail_next("error_event", times=5)
        client = LLMClient(fast_settings(fake.url, max_retries=1))
        with pytest.raises(llm.Unavailable):
            await collect(client)
        await client.aclose()
    assert len(fake.requests) == 2


async def test_reasoning_is_separate_from_content() -> None:
    async with FakeLLM() as fake:
        fake.answer = Answer.words(3, reasoning=["let me", " think"])
        client = LLMClient(fast_settings(fake.url))
        deltas = await collect(client)
        await client.aclose()
    assert "".join(d.reasoning for d in deltas) == "let me think"
    assert "".join(d.content for d in deltas) == "w1 w2 w3"


async def test_non_streaming_completion() -> None:
    async with FakeLLM() as fake:
        client = LLMClient(fast_settings(fake.url))
        completion = await client.complete(REQUEST)
        await client.aclose()
    assert completion.content == fake.answer.text
    assert fake.requests[0]["stream"] is False


async def test_hang_is_a_timeout_not_forever() -> None:
    async with FakeLLM() as fake:
        fake.fail_next("hang", times=3)
        client = LLMClient(fast_settings(fake.url, max_retries=0, first_token_timeout=0.3))
        client._http.timeout = __import__("httpx").Timeout(0.5)
        with pytest.raises((llm.Timeout, llm.Unavailable)):
            await asyncio.wait_for(collect(client), 5)
        await client.aclose()


async def test_first_token_budget_covers_every_attempt_and_back_off() -> None:
    """A server that accepts and never answers: the budget, not attempts × timeout."""
    async with FakeLLM() as fake:
        fake.fail_next("hang", times=20)
        client = LLMClient(fast_settings(fake.url, max_retries=10, first_token_timeout=0.4,
                                         first_token_budget=1.5))
        started = asyncio.get_running_loop().time()
        with pytest.raises(llm.Timeout):
            await collect(client)
        waited = asyncio.get_running_loop().time() - started
        await client.aclose()
    assert 1.0 <= waited < 2.5, waited
    assert 2 <= len(fake.requests) <= 4  # retried, within the budget


async def test_no_retry_is_made_that_could_not_finish_before_the_deadline() -> None:
    async with FakeLLM() as fake:
        fake.fail_next("503", times=5)
        client = LLMClient(fast_settings(fake.url, max_retries=5, retry_base_delay=4.0,
                                         first_token_budget=2.0))
        started = asyncio.get_running_loop().time()
        with pytest.raises(llm.Unavailable):
            await collect(client)
        waited = asyncio.get_running_loop().time() - started
        await client.aclose()
    assert waited < 0.5, waited  # the back-off (2-4 s) would outlast the budget: say so now
    assert len(fake.requests) == 1


async def test_an_explicit_deadline_wins() -> None:
    async with FakeLLM() as fake:
        fake.fail_next("stall")
        client = LLMClient(fast_settings(fake.url, first_token_timeout=5.0))
        with pytest.raises(llm.Timeout):
            _ = [d async for d in client.stream(REQUEST, deadline=time.monotonic() + 0.3)]
        await client.aclose()
    assert len(fake.requests) == 1
