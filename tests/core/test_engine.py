"""The answer pipeline end to end: fake model server, real Redis, a recording surface."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis

import bot.conversations.history
import bot.delivery.reply
from bot.contract import HistoryEntry
from bot.engine import Engine
from tests.fakes.llm import Answer, FakeLLM
from tests.support.core import ALICE, BOB, conversation, turn
from tests.support.helpers import wait_until
from tests.support.surfaces import RecordingSurface


async def test_streamed_answer_lands_exactly(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.words(40, tokens_per_second=100)
    surface = RecordingSurface()
    outcome = await engine.answer(turn("hello", surface=surface))
    assert outcome.outcome == "ok"
    assert surface.text == fake_llm.answer.text
    assert len(surface.platform_writes) >= 2  # posted early, then edited as it grew
    assert surface.platform_writes[0].kind == "post"
    assert outcome.tokens_out == 40


async def test_second_turn_sends_full_history_in_order(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.of("first answer")
    await engine.answer(turn("question one", author=ALICE))
    fake_llm.answer = Answer.of("second answer")
    await engine.answer(turn("question two", author=BOB))
    messages = fake_llm.requests[1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "Alice: question one"
    assert messages[2]["content"] == "first answer"
    assert messages[3]["content"] == "Bob: question two"


async def test_history_has_ttl_and_json_turns(
    engine: Engine, redis_client: redis.Redis, redis_prefix: str
) -> None:
    await engine.answer(turn("hello"))
    key = f"{redis_prefix}:conv:{{test:W1:C1:t1}}:history"
    assert 0 < await redis_client.ttl(key) <= 7 * 24 * 3600
    stored = await engine.conversations.load(conversation())
    assert [e.role for e in stored] == ["user", "assistant"]
    assert stored[0].author == "Alice" and stored[0].msg_id == "msg-hello"
    assert not await redis_client.exists(f"{redis_prefix}:conv:{{test:W1:C1:t1}}:lock")


async def test_persona_changes_next_request(engine: Engine, fake_llm: FakeLLM) -> None:
    scope = conversation().channel_scope
    reply = await engine.command("persona use pirate", scope=scope, conversation=None,
                                 actor=ALICE, can_admin=True)
    assert "pirate" in reply
    await engine.command("/persona model other/model", scope=scope, conversation=None,
                         actor=ALICE, can_admin=True)
    await engine.command("/persona reasoning off", scope=scope, conversation=None,
                         actor=ALICE, can_admin=True)
    await engine.answer(turn("ahoy"))
    body = fake_llm.requests[0]
    assert "pirate" in body["messages"][0]["content"]
    assert body["model"] == "other/model"
    assert body["temperature"] == 0.9
    assert body["reasoning"] == {"enabled": False}


async def test_persona_refused_without_permission(engine: Engine, fake_llm: FakeLLM) -> None:
    scope = conversation().channel_scope
    reply = await engine.command("persona set Be rude", scope=scope, conversation=None, actor=BOB,
                                 can_admin=False, who_may="workspace admins")
    assert "only workspace admins may" in reply
    await engine.answer(turn("hi"))
    assert "Be rude" not in fake_llm.requests[0]["messages"][0]["content"]


async def test_two_messages_in_one_conversation_are_answered_in_order(
    engine: Engine, fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(20, tokens_per_second=200)
    first = engine.submit(turn("one", message_id="1"))
    second = engine.submit(turn("two", message_id="2"))
    await asyncio.gather(first, second)
    second_messages = fake_llm.requests[1]["messages"]
    assert [m["content"] for m in second_messages[1:]] == ["Alice: one", fake_llm.answer.text, "Alice: two"]


async def test_fifty_conversations_in_parallel(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.words(30, tokens_per_second=300)
    surfaces = [RecordingSurface() for _ in range(50)]
    tasks = [engine.submit(turn(f"q{i}", thread=f"t{i}", surface=s)) for i, s in enumerate(surfaces)]
    outcomes = await asyncio.gather(*tasks)
    assert all(o.outcome == "ok" for o in outcomes)
    assert all(s.text == fake_llm.answer.text for s in surfaces)


async def test_429_then_success_answers_once(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.fail_next("429", retry_after=0)
    surface = RecordingSurface()
    outcome = await engine.answer(turn("hi", surface=surface))
    assert outcome.outcome == "ok"
    assert surface.text == fake_llm.answer.text
    assert len(surface.messages) == 1


async def test_repeated_500s_give_the_unavailable_message(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.fail_next("500", times=10)
    surface = RecordingSurface()
    outcome = await engine.answer(turn("hi", surface=surface))
    assert outcome.outcome == "error"
    assert "model is unavailable" in surface.text and "500" in surface.text
    stored = await engine.conversations.load(conversation())
    assert [e.role for e in stored] == ["user"]  # no assistant turn for a failure


async def test_bad_key_names_the_setting_not_the_secret(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.fail_next("401")
    surface = RecordingSurface()
    await engine.answer(turn("hi", surface=surface))
    assert "TOGETHER_API_KEY" in surface.text and "test-key" not in surface.text


async def test_cut_stream_keeps_partial_text_marked(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.words(20)
    fake_llm.fail_next("cut")
    surface = RecordingSurface()
    outcome = await engine.answer(turn("hi", surface=surface))
    assert outcome.outcome == "interrupted"
    partial = "".join(fake_llm.answer.tokens[:10])
    assert surface.text.startswith(partial)
    assert "Interrupted" in surface.text
    stored = await engine.conversations.load(conversation())
    assert stored[-1].role == "assistant" and stored[-1].interrupted and stored[-1].content == partial


async def test_length_finish_is_marked(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.words(5, finish_reason="length")
    surface = RecordingSurface()
    await engine.answer(turn("hi", surface=surface))
    assert "length limit" in surface.text


async def test_too_long_input_gets_a_clear_message_and_no_model_call(
    engine: Engine, fake_llm: FakeLLM
) -> None:
    surface = RecordingSurface()
    outcome = await engine.answer(turn("x" * 9000, surface=surface))
    assert outcome.outcome == "rejected"
    assert "9,000 characters" in surface.text
    assert fake_llm.requests == []


async def test_empty_message_gets_a_hint(engine: Engine, fake_llm: FakeLLM) -> None:
    surface = RecordingSurface()
    await engine.answer(turn("   ", surface=surface))
    assert "Ask me something" in surface.text
    assert fake_llm.requests == []


async def test_backfill_rebuilds_missing_history(engine: Engine, fake_llm: FakeLLM) -> None:
    earlier = [
        HistoryEntry("user", "what is 2+2?", author="Bob", msg_id="a"),
        HistoryEntry("assistant", "4", msg_id="b"),
    ]

    async def backfill() -> list[HistoryEntry]:
        return [*earlier, HistoryEntry("user", "and 3+3?", author="Alice", msg_id="c")]

    t = turn("and 3+3?", message_id="c")
    t.backfill = backfill
    await engine.answer(t)
    contents = [m["content"] for m in fake_llm.requests[0]["messages"][1:]]
    assert contents == ["Bob: what is 2+2?", "4", "Alice: and 3+3?"]  # the current message once
    stored = await engine.conversations.load(conversation())
    assert [e.msg_id for e in stored][:3] == ["a", "b", "c"]


async def test_final_text_lands_despite_429s_on_edits(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.words(30, tokens_per_second=100)
    surface = RecordingSurface(fail_edits=3)
    await engine.answer(turn("hi", surface=surface))
    assert surface.text == fake_llm.answer.text


async def test_forget_clears_the_conversation(engine: Engine, fake_llm: FakeLLM) -> None:
    await engine.answer(turn("remember me"))
    assert await engine.knows(conversation())
    reply = await engine.command("/forget", scope=conversation().channel_scope,
                                 conversation=conversation(), actor=ALICE, can_admin=False)
    assert "forgotten" in reply
    stored = await engine.conversations.load(conversation())
    assert [e.role for e in stored] == ["forgotten"]
    await engine.answer(turn("who am I?"))
    assert len(fake_llm.requests[-1]["messages"]) == 2


async def test_claim_is_true_once(engine: Engine) -> None:
    assert await engine.claim("test", "C1:123.456")
    assert not await engine.claim("test", "C1:123.456")


async def test_reasoning_is_never_shown(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.words(5, reasoning=["secret chain of thought"], first_token_delay=0.5)
    surface = RecordingSurface()
    await engine.answer(turn("hi", surface=surface))
    assert "secret" not in surface.text
    assert any(w.kind == "status" and "thinking" in w.text for w in surface.writes)  # the model was slow
    statuses = [w.text for w in surface.writes if w.kind == "status"]
    assert statuses == ["is thinking…", ""]  # shown, then cleared


async def test_long_answer_continues_in_new_messages(engine: Engine, fake_llm: FakeLLM) -> None:
    code = "```python\n" + "\n".join(f"print({i})" for i in range(400)) + "\n```\nDone."
    fake_llm.answer = Answer.of(code, chunk=40)
    surface = RecordingSurface()
    await engine.answer(turn("code please", surface=surface))
    parts = list(surface.messages.values())
    assert len(parts) >= 2
    assert all(len(p) <= 4000 for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts)
    body = "\n".join(line for p in parts for line in p.splitlines() if not line.startswith("```"))
    assert body == "\n".join(line for line in code.splitlines() if not line.startswith("```"))


async def test_forget_is_not_undone_by_rebuilding_from_the_platform(
    engine: Engine, fake_llm: FakeLLM
) -> None:
    async def backfill() -> list[HistoryEntry]:
        return [HistoryEntry("user", "old secret", author="Bob", msg_id="old")]

    await engine.command("forget", scope=conversation().channel_scope, conversation=conversation(),
                         actor=ALICE, can_admin=False)
    fresh = turn("new question", message_id="new")
    fresh.backfill = backfill
    await engine.answer(fresh)
    contents = [m["content"] for m in fake_llm.requests[0]["messages"][1:]]
    assert contents == ["Alice: new question"]


async def test_noted_messages_are_context_for_the_next_answer(engine: Engine, fake_llm: FakeLLM) -> None:
    assert not await engine.note(conversation(), BOB, "not yet a conversation", "n0")
    await engine.answer(turn("hello"))
    assert await engine.note(conversation(), BOB, "@Carol what do you think?", "n1")
    await engine.answer(turn("and now?"))
    contents = [m["content"] for m in fake_llm.requests[1]["messages"][1:]]
    assert contents[-2:] == ["Bob: @Carol what do you think?", "Alice: and now?"]


async def test_a_quick_answer_shows_no_status(engine: Engine, fake_llm: FakeLLM) -> None:
    surface = RecordingSurface()
    await engine.answer(turn("hi", surface=surface))
    assert [w.kind for w in surface.writes] == ["post"]


async def test_ordering_locks_are_dropped_when_idle(engine: Engine, fake_llm: FakeLLM) -> None:
    await asyncio.gather(*(engine.submit(turn(f"q{i}", thread=f"t{i % 3}")) for i in range(9)))
    assert len(engine.turns.arrival_order) == 0


async def test_reasoning_is_off_unless_the_channel_turns_it_on(
    engine: Engine, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stream's own slow-start status out of the way: what shows comes from the reasoning.
    monkeypatch.setattr(bot.delivery.reply, "THINKING_DELAY", 30.0, raising=False)
    await engine.answer(turn("hi"))
    assert fake_llm.requests[-1]["reasoning"] == {"enabled": False}  # BOT_REASONING=off, the default

    scope = conversation().channel_scope
    reply = await engine.command("persona reasoning on", scope=scope, conversation=None,
                                 actor=ALICE, can_admin=True)
    assert "reasoning" in reply
    fake_llm.answer = Answer.words(3, reasoning=["let me think"] * 3)
    surface = RecordingSurface()
    await engine.answer(turn("think hard", surface=surface))
    assert fake_llm.requests[-1]["reasoning"] == {"enabled": True}
    assert surface.text == "w1 w2 w3"
    assert [w.text for w in surface.writes if w.kind == "status"] == ["is thinking…", ""]


async def test_inline_think_is_reasoning_not_answer(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.of("<think>INLINETHOUGHT</think>Visible answer here.", chunk=3)
    surface = RecordingSurface()
    outcome = await engine.answer(turn("hi", surface=surface))
    assert outcome.outcome == "ok"
    assert surface.text == "Visible answer here."
    assert all("INLINETHOUGHT" not in w.text and "think>" not in w.text for w in surface.writes)
    stored = await engine.conversations.load(conversation())
    assert stored[-1].content == "Visible answer here."


async def test_after_the_final_text_a_failure_is_logged_not_shown(engine: Engine, fake_llm: FakeLLM) -> None:
    """Whatever fails once the answer has landed (here: usage), the person sees only the answer."""

    async def broken_flush() -> None:
        raise RuntimeError("usage store exploded")

    engine.usage.flush = broken_flush  # type: ignore[method-assign]
    surface = RecordingSurface()
    outcome = await engine.answer(turn("hi", surface=surface))
    assert surface.text == fake_llm.answer.text
    assert "Something went wrong" not in surface.text
    assert outcome.outcome == "ok"


async def test_a_failure_releasing_the_turn_is_not_shown_either(engine: Engine, fake_llm: FakeLLM) -> None:
    async def broken_release(*args: object) -> None:
        raise RuntimeError("release exploded")

    engine.conversations._release = broken_release  # type: ignore[method-assign]
    surface = RecordingSurface()
    outcome = await engine.answer(turn("hi", surface=surface))
    assert surface.text == fake_llm.answer.text  # one message: the answer, nothing after it
    assert len(surface.messages) == 1
    assert (outcome.outcome, outcome.error) == ("ok", "RuntimeError")


async def test_unencodable_model_output_is_replaced_not_fatal(engine: Engine, fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.of("odd \ud800 output", chunk=3)
    surface = RecordingSurface()
    outcome = await engine.answer(turn("hi", surface=surface))
    assert outcome.outcome == "ok"
    assert surface.text == "odd \ufffd output"
    assert (await engine.conversations.load(conversation()))[-1].content == "odd \ufffd output"


async def test_a_lock_left_by_a_failed_release_is_freed_by_the_next_turn(
    engine: Engine, fake_llm: FakeLLM, redis_client: redis.Redis, redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The release of a turn fails (e.g. a cluster master died mid-answer and its replica, which
    has the lock, took over): the next turn frees that lock in the round trip that starts it,
    instead of waiting out the lock's 30 s."""
    finish = engine.store.finish_turn

    async def unreachable(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("the master went away")

    monkeypatch.setattr(engine.store, "finish_turn", unreachable)
    fake_llm.answer = Answer.of("kept in memory")
    assert (await engine.answer(turn("first"))).outcome == "ok"
    lock = f"{redis_prefix}:conv:{{test:W1:C1:t1}}:lock"
    assert await redis_client.exists(lock)  # left behind, as after a failover

    monkeypatch.setattr(engine.store, "finish_turn", finish)
    monkeypatch.setattr(bot.conversations.history, "LOCK_WAIT_LIMIT", 1.0)  # busy if the lock were waited out
    engine.store_state.succeeded()  # the breaker's pause is another test's subject
    fake_llm.answer = Answer.of("second answer")
    assert (await engine.answer(turn("second"))).outcome == "ok"
    stored = [e.content for e in await engine.conversations.load(conversation())]
    assert stored == ["first", "kept in memory", "second", "second answer"]
    assert not await redis_client.exists(lock)


async def test_lock_renewals_end_once_the_lock_is_not_the_turns(
    engine: Engine, redis_client: redis.Redis, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A turn's renewals stop by themselves once its lock is gone (expired and taken, or
    released), even if the cancellation the turn's end sends were swallowed on the way."""
    monkeypatch.setattr(bot.conversations.history, "LOCK_RENEW_EVERY", 0.01)
    renewals: list[bool] = []
    renew = engine.store.renew_lock

    async def counted(*args: object) -> bool:
        renewals.append(await renew(*args))  # type: ignore[arg-type]
        return renewals[-1]

    monkeypatch.setattr(engine.store, "renew_lock", counted)

    def keeping_alive() -> bool:
        return any("_keep_alive" in repr(task.get_coro()) for task in asyncio.all_tasks())

    user = HistoryEntry(role="user", content="hi", msg_id="m1")
    async with engine.conversations.turn(conversation(), user):
        assert keeping_alive()
        await wait_until(lambda: len(renewals) >= 2)
        assert all(renewals)
        await redis_client.delete(f"{redis_prefix}:conv:{{test:W1:C1:t1}}:lock")  # expired
        await wait_until(lambda: not keeping_alive())
    assert renewals[-1] is False
