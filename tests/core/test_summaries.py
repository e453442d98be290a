"""Summaries in the core (`Core.summarize`): one request when the messages fit, map-reduce when
they do not, every request within the context budget; citations become links, made-up ones are
dropped; an empty window is said; Stop ends it. Real Redis, the fake model, the test clock."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest

from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.contract.summaries import CONVERSATION, THREAD, SourceMessage, SourceUnreadable, SummaryAsk
from bot.conversations.citations import Citations
from bot.conversations.summarizing import RESTARTING_NOTE, STOPPED_NOTE
from bot.engine import Engine
from bot.model.prompt import estimate_tokens
from bot.ops import metrics
from tests.fakes.llm import Answer, FakeLLM
from tests.support.clock import FastClock
from tests.support.core import ALICE, conversation, turn
from tests.support.helpers import wait_until
from tests.support.summaries import cited, every_request, model_citing
from tests.support.surfaces import RecordingSurface

CONTEXT, ANSWER = 2000, 300  # a budget of 1,700 tokens a request


@pytest.fixture
async def small_engine(
    engine_env: dict[str, str], clock: FastClock, request: pytest.FixtureRequest
) -> AsyncIterator[Engine]:
    """An engine with a small context; a test's `summary_env` mark adds settings."""
    marker = request.node.get_closest_marker("summary_env")
    env = engine_env | {"BOT_CONTEXT_TOKENS": str(CONTEXT), "BOT_MAX_TOKENS": str(ANSWER)}
    env |= marker.kwargs if marker else {}
    async with open_engine(load_settings(env, dotenv=False), clock) as engine:
        yield engine


def thread(count: int, words: int = 25) -> list[SourceMessage]:
    """`count` messages of about `words` words each, message i saying `said-i` once."""
    return [
        SourceMessage(f"ts{i}", f"person{i % 7}", f"said-{i} " + " ".join(["lorem"] * words), 1000.0 + i)
        for i in range(1, count + 1)
    ]


async def link(message: SourceMessage) -> str:
    return f"https://chat.example/{message.id}"


def ask_for(messages: list[SourceMessage], surface: RecordingSurface, **kwargs: object) -> SummaryAsk:
    async def read() -> list[SourceMessage]:
        return messages
    return SummaryAsk(conversation(), ALICE, surface, THREAD, read=read, link=link, **kwargs)  # type: ignore[arg-type]


async def test_a_thread_longer_than_the_budget_is_read_in_parts_within_it(
    small_engine: Engine, fake_llm: FakeLLM
) -> None:
    metrics.reset()
    messages = thread(300)  # about 300 × 40 = 12,000 tokens: seven or more parts
    fake_llm.script = model_citing()
    surface = RecordingSurface()
    outcome = await small_engine.summarize(ask_for(messages, surface))
    assert outcome.outcome == "ok"

    asked = [r["messages"] for r in fake_llm.requests]
    assert len(asked) > 3  # parts, then their combination
    for request in asked:  # no request over the budget (the same estimate the prompt uses)
        assert sum(estimate_tokens(m["content"]) for m in request) <= CONTEXT - ANSWER
    # Every message reached some request.
    assert all(f"said-{i} " in every_request(fake_llm) for i in range(1, 301))
    # The summary cites messages as links to them; the final is the last request's answer.
    assert "[1](https://chat.example/ts1)" in surface.text
    assert "[300](https://chat.example/ts300)" in surface.text
    registry = metrics.current().registry
    assert registry.get_sample_value(
        "chatbot_summaries_total", {"platform": "test", "kind": "thread", "outcome": "ok"}) == 1
    assert registry.get_sample_value(
        "chatbot_summary_messages_read_total", {"platform": "test", "kind": "thread"}) == 300
    assert registry.get_sample_value("chatbot_summary_model_requests_sum", {"platform": "test"}) == len(asked)


async def test_messages_that_fit_take_one_request_and_a_made_up_citation_is_dropped(
    engine: Engine, fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("- the plan changed [2]\n- nobody said this [99]\n- both [1, 3]")
    surface = RecordingSurface()
    await engine.summarize(ask_for(thread(3), surface))
    assert len(fake_llm.requests) == 1
    content = fake_llm.requests[0]["messages"][-1]["content"]
    assert content.splitlines()[0].startswith("[1] person1: said-1")
    final = surface.text
    assert "- the plan changed [2](https://chat.example/ts2)" in final
    assert "- nobody said this\n" in final and "99" not in final
    assert "[1](https://chat.example/ts1) [3](https://chat.example/ts3)" in final


# Parts finish one by one, each said.
@pytest.mark.summary_env(SUMMARY_PROGRESS_INTERVAL="0", SUMMARY_CONCURRENCY="2")
async def test_progress_shows_at_once_and_as_parts_finish(small_engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.script = lambda asked: Answer.of(f"- point [{cited(asked)[0]}]", tokens_per_second=20)
    surface = RecordingSurface()
    await small_engine.summarize(ask_for(thread(300), surface))
    statuses = [w.text for w in surface.writes if w.kind == "status"]
    assert statuses[0] == "Reading 300 messages…"
    assert any(re.fullmatch(r"Read \d+ of 300 messages…", s) for s in statuses)
    first_status = next(w for w in surface.writes if w.kind == "status")
    first_post = next(w for w in surface.writes if w.kind == "post")
    assert first_status.at < first_post.at


async def test_an_empty_window_is_said_without_asking_the_model(engine: Engine, fake_llm: FakeLLM) -> None:
    metrics.reset()
    surface = RecordingSurface()
    outcome = await engine.summarize(ask_for([], surface, window="the last 2 hours"))
    assert outcome.outcome == "empty"
    assert surface.text == "There are no messages to summarise in the last 2 hours."
    assert fake_llm.requests == []
    assert metrics.current().registry.get_sample_value(
        "chatbot_summaries_total", {"platform": "test", "kind": "thread", "outcome": "empty"}) == 1


async def test_messages_it_cannot_read_are_said_in_one_line(engine: Engine, fake_llm: FakeLLM) -> None:
    async def gone() -> list[SourceMessage]:
        raise SourceUnreadable("That thread is gone (deleted), so there is nothing to summarise.")

    surface = RecordingSurface()
    ask = SummaryAsk(conversation(), ALICE, surface, THREAD, read=gone)
    assert (await engine.summarize(ask)).outcome == "error"
    assert surface.text == "That thread is gone (deleted), so there is nothing to summarise."
    assert fake_llm.requests == []


@pytest.mark.summary_env(SUMMARY_MAX_MESSAGES="100")
async def test_at_most_so_many_messages_are_read_the_oldest_left_out_and_said(
    small_engine: Engine, fake_llm: FakeLLM
) -> None:
    fake_llm.script = model_citing()
    surface = RecordingSurface()
    await small_engine.summarize(ask_for(thread(150), surface))
    every = every_request(fake_llm)
    assert "said-50 " not in every and "said-51 " in every and "said-150 " in every
    assert "The oldest 50 messages were left out: a summary reads at most 100 messages." in surface.text


@pytest.mark.summary_env(SUMMARY_MAX_REQUESTS="4")
async def test_at_most_so_many_model_requests_are_made_the_oldest_parts_left_out_and_said(
    small_engine: Engine, fake_llm: FakeLLM
) -> None:
    fake_llm.script = model_citing()
    surface = RecordingSurface()
    await small_engine.summarize(ask_for(thread(300), surface))
    assert len(fake_llm.requests) <= 4
    assert "were left out: a summary makes at most 4 model requests" in surface.text
    assert "said-300 " in every_request(fake_llm)


async def test_stop_ends_a_summary_mid_way(small_engine: Engine, fake_llm: FakeLLM) -> None:
    metrics.reset()
    fake_llm.script = lambda asked: Answer.words(300, tokens_per_second=20)
    surface = RecordingSurface()
    task = small_engine.summarize(ask_for(thread(300), surface, answer_id="sum1"))
    await wait_until(lambda: fake_llm.streams, 5)
    pressed = await small_engine.stop("sum1", ALICE, can_admin=False)
    assert pressed.done
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.outcome == "stopped"
    assert surface.text.endswith(STOPPED_NOTE)
    await wait_until(lambda: all(s.gone or s.last_token for s in fake_llm.streams), 5)
    assert all(s.sent < 300 for s in fake_llm.streams)  # every stream was cut


async def test_without_a_reader_the_conversation_kept_is_read(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.of("The answer about tides.")
    await engine.answer(turn("tell me about tides", message_id="q1"))
    fake_llm.answer = Answer.of("- asked about tides [1]")
    surface = RecordingSurface()
    await engine.summarize(SummaryAsk(conversation(), ALICE, surface, CONVERSATION))
    given = fake_llm.requests[-1]["messages"][-1]["content"]
    assert given.splitlines() == ["[1] Alice: tell me about tides", "[2] the bot: The answer about tides."]
    assert surface.text == "- asked about tides [1]"  # no link builder: the number stays


async def test_citations_split_across_deltas_become_links() -> None:
    async def link_of(number: int) -> str:
        return f"u{number}"

    citations = Citations({1: None, 12: None}, link_of)
    pieces = ["a [", "1", "2] b [", "7] c [1", "]", " [x] [3"]
    shown = "".join([await citations.feed(p) for p in pieces]) + await citations.flush()
    assert shown == "a [12](u12) b c [1](u1) [x] [3"
    assert citations.dropped == 1 and citations.cited == {1, 12}


async def test_a_summary_cut_by_a_restart_lands_what_it_has_marked(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.words(400, tokens_per_second=40)
    surface = RecordingSurface()
    task = engine.summarize(ask_for(thread(3), surface))
    await wait_until(lambda: " w5" in surface.text, 10)
    assert await engine.drain(0.01) == 1
    assert task.cancelled()
    assert surface.text.startswith("w1 w2 w3 w4 w5")
    assert surface.text.endswith(RESTARTING_NOTE) and "w400" not in surface.text


async def test_the_channels_summary_prompt_follows_its_persona(engine: Engine, fake_llm: FakeLLM) -> None:
    """`/persona summary PROMPT` is added to the persona's prompt in every summary request,
    and nowhere else: an answer in the same channel does not get it."""
    scope = conversation().channel_scope
    said = await engine.command(
        "persona summary Answer in French, as three bullets.", scope=scope, conversation=None,
        actor=ALICE, can_admin=True,
    )
    assert "summary_prompt is now" in said
    fake_llm.answer = Answer.of("- résumé")
    await engine.summarize(ask_for(thread(3), RecordingSurface()))
    system = fake_llm.requests[-1]["messages"][0]["content"]
    assert "Answer in French, as three bullets." in system
    assert (await engine.answer(turn("hello"))).outcome == "ok"
    assert "three bullets" not in fake_llm.requests[-1]["messages"][0]["content"]
