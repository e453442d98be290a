"""One turn: a claimed message, answered and stored, in named steps.

    limits → files → lock + history + persona → prompt → stream → store

`Turns.steps` tells the story in that order; each step may end the turn with a word to
the person (a limit, an empty or over-long message, a prompt that cannot fit). The claim
(dedup) comes before, at the facade (`bot.engine.Engine.claim`), since an adapter asks it
before it acknowledges an event. Operations hook in at a few points: limits before the
model call (`bot.ops.limits`), the answer in flight on record while it streams
(`bot.ops.inflight`), token usage (`bot.ops.usage`), and one metrics update and one log line
per turn (`bot.ops.metrics`, `bot.ops.logs`).

Redis is a working copy: when it is unreachable a turn goes on without it (see
`bot.state.resilience`), and once an answer's final text has landed nothing that fails
afterwards (storing it, releasing the lock, usage) is shown to the person.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.clock import Clock
from bot.config import Settings
from bot.contract import ChannelScope, HistoryEntry, Turn
from bot.conversations import sanitize
from bot.conversations.feedback import Feedback
from bot.conversations.history import ConversationBusy, Conversations, Deferral, LockedTurn, joined_answers
from bot.conversations.ordering import ArrivalOrder
from bot.conversations.personas import Persona, PersonaStore, effective
from bot.delivery.live import LiveAnswer, LiveAnswers
from bot.delivery.pacing import Pacer
from bot.delivery.reply import RESTARTING_NOTE, STOPPED_NOTE, THINKING, ReplyStream, interrupted_note
from bot.delivery.tasks import Stopped, unless_stopped
from bot.files.attachments import Intake, Reader, takes_images
from bot.model import llm
from bot.model.fallback import ChainAnswer, ModelChain
from bot.model.prompt import InputTooLong, estimate_tokens, message_tokens
from bot.model.reasoning import InlineThinking
from bot.model.request_size import TOO_LARGE_NOTE, FittedPrompt, RequestFit
from bot.ops import logs, metrics, tracing
from bot.ops.inflight import InFlight
from bot.ops.limits import Limits, Refusal
from bot.ops.outcome import Outcome, TurnHook
from bot.ops.usage import Usage
from bot.state.breaker import RedisState
from bot.state.interface import Store, StoreError
from bot.state.resilience import PersonaCache
from bot.tools import loop as tool_loop
from bot.tools.approval import Approvals
from bot.tools.choice import chosen
from bot.tools.servers import ToolInfo, ToolServers

log = logging.getLogger("bot.engine")  # the name operators' log filters know

LENGTH_NOTE = "_(The answer reached its length limit and stops here.)_"
BUSY_MESSAGE = "I'm still busy with an earlier message in this conversation. Please try again shortly."
SLOW_STATUS = "is waiting for the model, which is slow to answer…"
SLOW_AFTER = 10.0  # seconds without a first token before the status says the model is slow
EDITED_NOTE = "_(The question was edited; answering it again…)_"

# When a claimed event began and ended (monotonic), for the turn's trace, or None.
ClaimTimes = Callable[[str, str], "tuple[float, float] | None"]


def no_vision_note(model: str) -> str:
    return (
        f"I can't see images with this model (`{model}`), so I answered from the text. "
        "If it does take images, `/persona vision on`."
    )


def fallback_note(answer: ChainAnswer) -> str:
    """The footnote of an answer a fallback model gave."""
    if not answer.fell_back:
        return ""
    return f"_(Answered by `{answer.model}`: `{answer.first}` could not answer just now.)_"


def files_note(notes: list[str]) -> str:
    """What the answer says about the files it left out or cut."""
    return "\n".join(f"_({note})_" for note in notes)


def _joined(*notes: str) -> str:
    return "\n\n".join(n for n in notes if n)


def _chain_done(outcome: Outcome, answered: ChainAnswer, note: str) -> str:
    """Usage and feedback count against the model that answered; its footnote joins `note`."""
    outcome.model = answered.model or outcome.model
    return _joined(fallback_note(answered), note)


@dataclass
class Asked:
    """What the prompt step decided: the request, the models to ask in order, what the answer
    will say about files, and how the request was fitted (to word a 413)."""

    request: llm.ChatRequest
    chain: Sequence[str]
    note: str
    fitted: FittedPrompt
    tools: tool_loop.ToolUse | None = None  # the tools offered to this answer, and its steps


@dataclass
class _Reading:
    """What each model request of one answer is read into and with (`Turns._read_model`)."""

    reply: ReplyStream
    inline: InlineThinking
    outcome: Outcome
    slow: asyncio.TimerHandle  # the "model is slow" status, cancelled by the first sign of life
    models: Sequence[str]
    answered: ChainAnswer


class Turns:
    """The turn pipeline. The engine builds it from its parts and hands it each turn."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        store: Store,
        store_state: RedisState,
        conversations: Conversations,
        personas: PersonaStore,
        persona_cache: PersonaCache,
        limits: Limits,
        files: Reader,
        request_fit: RequestFit,
        chain: ModelChain,
        pacer: Pacer,
        inflight: InFlight,
        live: LiveAnswers,
        feedback_votes: Feedback,
        usage: Usage,
        on_outcome: list[TurnHook],
        claim_times: ClaimTimes,
        tools: ToolServers | None = None,
        approvals: Approvals | None = None,
    ) -> None:
        self.settings = settings
        self.tools = tools
        self.approvals = approvals
        self.clock = clock
        self.store = store
        self.store_state = store_state
        self.conversations = conversations
        self.personas = personas
        self.persona_cache = persona_cache
        self.limits = limits
        self.files = files
        self.request_fit = request_fit
        self.chain = chain
        self.pacer = pacer
        self.inflight = inflight
        self.live = live
        self.feedback_votes = feedback_votes
        self.usage = usage
        self.on_outcome = on_outcome
        self.claim_times = claim_times
        self.slots = asyncio.Semaphore(settings.max_concurrent_replies)
        self.arrival_order = ArrivalOrder()
        self._hook_tasks: set[asyncio.Future[None]] = set()

    async def answer(self, turn: Turn) -> Outcome:
        """The turn, traced from its claim, with its outcome reported and its usage counted."""
        c = turn.conversation
        attributes = {"chatbot.platform": c.platform, "gen_ai.conversation.id": str(c)}
        claimed = self.claim_times(c.platform, turn.event_id) if turn.event_id else None
        started = min(turn.received_at, claimed[0]) if claimed else turn.received_at
        with tracing.turn("chatbot turn", started, attributes) as span:
            if claimed is not None:
                tracing.past_span("claim", *claimed)
            outcome = await self._answer_turn(turn)
            tracing.set_attributes(span, {
                "chatbot.persona": outcome.persona, "chatbot.outcome": outcome.outcome,
                "chatbot.model": outcome.model, "error.type": outcome.error,
            })
        return outcome

    async def _answer_turn(self, turn: Turn) -> Outcome:
        c = turn.conversation
        outcome = Outcome(str(c), platform=c.platform, scope=str(c.channel_scope), author=turn.author.id)
        try:
            await self.steps(turn, outcome)
        except asyncio.CancelledError:
            outcome.outcome = "interrupted"
            outcome.error = "shutdown"
            raise
        except Exception as exc:  # the last line of defence: say something, log everything
            if isinstance(exc, StoreError):
                metrics.redis_error("answer")
            if outcome.wrote_final:
                # The person has their answer: whatever failed after it is for the operator.
                log.exception("failure after the answer landed in %s", turn.conversation)
                metrics.after_answer_failure("other")
                outcome.error = type(exc).__name__
            else:
                log.exception("answer failed in %s", turn.conversation)
                outcome.outcome, outcome.error = "error", type(exc).__name__
                await self._say(turn, "Something went wrong on my side while answering. Please try again.")
        finally:
            outcome.total_s = time.monotonic() - turn.received_at
            if outcome.degraded and outcome.wrote_final:
                metrics.degraded_answer(outcome.platform)
            self._report(outcome)
            await asyncio.shield(self._count_usage(turn, outcome))
        return outcome

    # ---- the story of a turn ---------------------------------------------------------------

    async def steps(self, turn: Turn, outcome: Outcome) -> None:
        text = await self._screen(turn, outcome)  # limits needing no round trip; empty or too long
        if text is None:
            return
        go_ahead, persona = await self._count_limits(turn, outcome)  # the persona read along
        if not go_ahead:
            return
        async with self.arrival_order.turn(turn.conversation):
            # Files in arrival order (a later message must not overtake one whose files take
            # longer), before the conversation's lock: the history keeps their text.
            intake = await self._read_files(turn)
            user = HistoryEntry(
                role="user", content=text, author=sanitize.clean(turn.author.name), msg_id=turn.message_id,
                ts=time.time(), attachments=intake.files,
            )
            async with self.slots:
                try:
                    await self._under_lock(turn, user, outcome, persona, intake)
                except ConversationBusy:
                    outcome.outcome, outcome.error = "error", "busy"
                    await self._say(turn, BUSY_MESSAGE)

    async def _under_lock(
        self, turn: Turn, user: HistoryEntry, outcome: Outcome, persona: Persona | None, intake: Intake,
    ) -> None:
        """lock + history + persona → prompt → stream → store. The lock's round trip stores the
        question, and the one that releases it stores the answer and whatever was deferred."""
        scope = turn.conversation.channel_scope
        # Without counted limits, the persona is read in the round trip that takes the lock.
        locking = self.conversations.turn(turn.conversation, user, scope if persona is None else None)
        async with tracing.around(locking, "lock and history", "store") as locked:
            outcome.degraded = not locked.stored
            persona = persona or self._persona_of(locked, scope)
            history = await self._history(turn, locked)
            asked = await self._prompt(turn, history, persona, intake, outcome, locked.defer)
            if asked is None:
                return
            locked.answer = await self._stream(turn, asked, outcome, locked.defer)
            self._store(turn, asked, outcome, locked)

    # ---- the steps -------------------------------------------------------------------------

    async def _screen(self, turn: Turn, outcome: Outcome) -> str | None:
        """The message's text, or None when it gets no answer (said so, where there is something
        to say)."""
        refusal = self.limits.screen(turn.conversation, turn.author)
        if refusal is not None:
            await self._refuse(turn, outcome, refusal)
            return None
        text = sanitize.clean(turn.text).strip()
        if sanitize.is_blank(text) and not turn.attachments:
            outcome.outcome = "ignored"
            await self._say(turn, "Hi! Ask me something and I'll answer here.")
            return None
        if len(text) > self.settings.max_input_chars:
            outcome.outcome, outcome.error = "rejected", "input_too_long"
            metrics.limited(turn.conversation.platform, "input_length")
            await self._say(
                turn,
                f"That message is {len(text):,} characters long; I can take up to "
                f"{self.settings.max_input_chars:,}. Please shorten it or split it up.",
            )
            return None
        return text

    async def _count_limits(self, turn: Turn, outcome: Outcome) -> tuple[bool, Persona | None]:
        """The counted limits: whether the turn goes ahead, and the persona read in the same round
        trip (None: it is read with the lock; so without counted limits, or without Redis, when
        there is nothing to count against and the answer goes ahead)."""
        if not self.limits.counted:
            return True, None
        with tracing.span("limits"):
            checked = await self.store_state.call(
                "limits", lambda: self.limits.check(turn.conversation, turn.author), otherwise=None
            )
        if checked is None:
            return True, None
        refusal, raw = checked
        if refusal is not None:
            await self._refuse(turn, outcome, refusal)
            return False, None
        self.persona_cache.remember(turn.conversation.channel_scope, raw)
        return True, self.personas.parse(raw)

    async def _read_files(self, turn: Turn) -> Intake:
        with tracing.span("files", {"chatbot.files": len(turn.attachments)}):
            return await self.files.read(turn.attachments, turn.fetch_file)

    def _persona_of(self, locked: LockedTurn, scope: ChannelScope) -> Persona:
        """The persona read with the lock; the last one known here while Redis is away."""
        if locked.stored:
            self.persona_cache.remember(scope, locked.persona)
            return self.personas.parse(locked.persona)
        return self.personas.parse(self.persona_cache.recall(scope))

    async def _history(self, turn: Turn, locked: LockedTurn) -> list[HistoryEntry]:
        history = locked.history
        if len(history) == 1 and turn.backfill is not None:
            history = await self._backfill(turn, history)
        return history

    async def _prompt(
        self, turn: Turn, history: list[HistoryEntry], persona: Persona, intake: Intake, outcome: Outcome,
        defer: Deferral,
    ) -> Asked | None:
        """The request: the persona's settings, the history within the context's tokens and the
        request's bytes, images where the model takes them; None when the question cannot fit."""
        params = effective(persona, self.settings.model)
        outcome.persona, outcome.model = persona.preset or "custom", params.model
        vision = params.vision if params.vision is not None else takes_images(
            params.model, self.settings.attachments
        )
        notes = list(intake.notes)
        images: dict[str, str] = {}
        if vision:
            images = await self.files.replay(history[:-1], turn.fetch_file, intake.images)
        elif intake.image_refs:
            notes.append(no_vision_note(params.model))
        system_prompt = persona.system_prompt
        if turn.context:
            system_prompt += "\n\n" + sanitize.clean(turn.context)
        try:
            fitted = await self.request_fit.build(
                system_prompt, history, self.settings.model.context_tokens - params.max_tokens,
                images, intake.image_refs,
            )
        except InputTooLong as too_long:
            outcome.outcome, outcome.error = "rejected", "input_too_long"
            await self._say(turn, too_long.user_message)
            return None
        notes += [
            f"`{name}` was left out: it does not fit the model's context." for name in fitted.prompt.trimmed
        ] + fitted.notes
        if fitted.left_out:
            defer(self.store.leave_out(turn.conversation, fitted.left_out, TOO_LARGE_NOTE))
        tools = self._tools_for(turn, persona, params.model)
        request = llm.ChatRequest(
            model=params.model, messages=fitted.prompt.messages, temperature=params.temperature,
            max_tokens=params.max_tokens, reasoning=params.reasoning, tools=tools.schemas if tools else (),
        )
        chain = self.chain.models(params.model, persona.fallback)
        return Asked(request, chain, files_note(notes), fitted, tools)

    def _tools_for(self, turn: Turn, persona: Persona, model: str) -> tool_loop.ToolUse | None:
        """The tools this answer is offered: the persona's servers (or BOT_TOOLS) that are up;
        those needing the asker's approval only where Approve/Deny can be shown (docs/tools.md)."""
        if not self.tools:
            return None
        s, servers, approvals = self.settings.tools, self.tools, self.approvals

        def needs_approval(tool: ToolInfo) -> bool:
            approve = servers.servers[tool.server].spec.approve
            return approve == "always" or (approve == "writes" and not tool.read_only)

        can_ask = approvals is not None and turn.surface.limits.controls
        names = chosen(persona.tools, s.default, frozenset(servers.servers))
        offered = [t for t in servers.offered(names) if can_ask or not needs_approval(t)]
        if not offered:
            return None

        async def approve(tool: ToolInfo, arguments: dict[str, Any]) -> str:
            assert approvals is not None
            return await approvals.ask(turn.surface, turn.author, tool, arguments)

        use = tool_loop.ToolUse(
            servers, offered, s.result_max_chars, s.max_steps,
            deadline=turn.received_at + self.clock.real(s.turn_seconds),
            approve=approve, needs_approval=needs_approval,
            may_step=lambda: self.store_state.call(  # Redis away: the step goes ahead, as a message would
                "limits", lambda: self.limits.tool_step(turn.conversation, turn.author), otherwise=True),
        )
        if self.chain.lacks(model, "tools"):  # its 400 said so earlier: asked without them
            use.note(tool_loop.NO_TOOLS_NOTE)
            use.offered = []
        return use

    def _store(self, turn: Turn, asked: Asked, outcome: Outcome, locked: LockedTurn) -> None:
        """What the lock's release writes besides the answer (`locked.answer`)."""
        if outcome.error == llm.RequestTooLarge.kind and asked.fitted.sent:
            # Refused by the server as too large: no later turn sends these images again.
            locked.defer(self.store.leave_out(turn.conversation, list(asked.fitted.sent), TOO_LARGE_NOTE))
        if locked.answer is not None and turn.surface.limits.controls:
            # The answer carries 👍/👎: keep what it was, in the round trip that stores it.
            locked.defer(self.feedback_votes.remember(
                turn.answer_id, turn.conversation, turn.author, outcome.persona, outcome.model
            ))

    # ---- the stream ------------------------------------------------------------------------

    async def _stream(
        self, turn: Turn, asked: Asked, outcome: Outcome, defer: Deferral
    ) -> HistoryEntry | None:
        """Stream the answer onto the surface; return what to store as the assistant turn."""
        surface, pacer = tracing.write_path(turn.surface, self.pacer)
        async with (
            ReplyStream(surface, pacer, answer_id=turn.answer_id) as reply,
            self.inflight.track(turn.conversation, reply, defer),  # on record until the final text lands
        ):
            outcome.reply = reply
            try:
                with metrics.live_stream(turn.conversation.platform):
                    return await self._stream_into(reply, turn, asked, outcome)
            finally:
                if asked.tools is not None:  # stopped or failed too: the calls were made
                    outcome.tool_calls = asked.tools.calls
                    outcome.tool_servers = dict(asked.tools.by_server)
                if outcome.first_token_s is not None and not (outcome.tokens_in or outcome.tokens_out):
                    # Cut before the usage chunk: the tokens were still spent; count an estimate.
                    outcome.tokens_in = sum(message_tokens(m) for m in asked.request.messages)
                    outcome.tokens_out = estimate_tokens(reply.text)

    async def _stream_into(
        self, reply: ReplyStream, turn: Turn, asked: Asked, outcome: Outcome
    ) -> HistoryEntry | None:
        """Stream the answer; the files' note is appended to the final text, and a 413 is worded
        for this request (which files)."""
        request, note = asked.request, asked.note
        answered = ChainAnswer()
        outcome.intake_s = time.monotonic() - turn.received_at
        inline = InlineThinking()
        # The budget for a first token runs from the question, not from the request.
        deadline = turn.received_at + self.clock.real(self.settings.model.first_token_budget)
        slow = asyncio.get_running_loop().call_later(
            max(0.0, turn.received_at + self.clock.real(SLOW_AFTER) - time.monotonic()),
            reply.set_status_text, SLOW_STATUS
        )
        live = LiveAnswer(turn.author, outcome, turn.conversation, turn.message_id, asyncio.current_task())
        try:
            with self.live.reading(reply.id, live):  # a press from then on finds it finished
                reading = _Reading(reply, inline, outcome, slow, asked.chain or [request.model], answered)
                if asked.tools is not None:
                    read = self._converse(reading, request, deadline, asked.tools)
                else:
                    read = self._read_model(reading, request, deadline)
                finish = await unless_stopped(read, live.stop)
        except llm.LLMError as error:
            note = _chain_done(outcome, answered, note)
            outcome.error = error.kind
            log.error("model API error in %s: %s", turn.conversation, error)
            reply.add(inline.flush().answer)
            if not reply.has_text:
                outcome.outcome = "error"
                too_large = isinstance(error, llm.RequestTooLarge)
                await reply.fail(asked.fitted.too_large_message(error.user_message) if too_large
                                 else error.user_message)
                return None
            outcome.outcome = "interrupted"
            await reply.finish(_joined(note, interrupted_note(error.user_message)))
            return _assistant_entry(reply, interrupted=True)
        except asyncio.CancelledError:
            # Shutting down mid-answer: land what we have, clearly marked.
            await asyncio.shield(reply.land(RESTARTING_NOTE))
            raise
        finally:
            slow.cancel()
        note = _chain_done(outcome, answered, note)
        if asked.tools is not None:
            note = _joined(*asked.tools.notes, note)
        reply.add(inline.flush().answer)
        if isinstance(finish, Stopped):
            outcome.outcome, outcome.stream_cut_at = "stopped", time.monotonic()
            if live.superseded:  # its question changed: nothing of it is kept, a new answer follows
                outcome.error = "question_edited"
                await reply.finish(EDITED_NOTE)
                return None
            if not reply.has_text:
                await reply.fail(STOPPED_NOTE)
                return None
            await reply.finish(_joined(STOPPED_NOTE, note))
            return _assistant_entry(reply, interrupted=False, stopped=True, tools=asked.tools)
        await reply.finish(_joined(LENGTH_NOTE if finish == "length" else "", note))
        return _assistant_entry(reply, interrupted=False, tools=asked.tools)

    async def _read_model(
        self, r: _Reading, request: llm.ChatRequest, deadline: float,
        calls: tool_loop.CallAssembler | None = None,
    ) -> str | None:
        """Feed the model's stream into `r.reply` (its tool calls into `calls`); return its finish reason."""
        reply, inline, outcome, slow = r.reply, r.inline, r.outcome, r.slow
        finish: str | None = None
        asked = time.monotonic()
        thinking_said = False
        async for delta in self.chain.stream(request, r.models, deadline, r.answered):
            split = inline.feed(sanitize.clean(delta.content)) if delta.content else None
            if (delta.reasoning or (split and split.reasoning)) and not thinking_said:
                slow.cancel()
                thinking_said = True
                reply.set_status_text(THINKING)
            if split and split.answer:
                if outcome.first_token_s is None:
                    outcome.first_token_s = time.monotonic() - asked
                    slow.cancel()
                reply.add(split.answer)
            if delta.tool_calls and calls is not None:
                calls.feed(delta.tool_calls)
            if delta.usage:  # summed: an answer with tools asks the model more than once
                outcome.tokens_in += delta.usage.prompt_tokens
                outcome.tokens_out += delta.usage.completion_tokens
            finish = delta.finish_reason or finish
        return finish

    async def _converse(
        self, r: _Reading, request: llm.ChatRequest, deadline: float, tools: tool_loop.ToolUse
    ) -> str | None:
        """The tool loop (bot/tools/loop.py): ask, run the calls the model makes, send their results
        back, ask again, until it answers in text; the steps shown at the top of the answer."""
        reply = r.reply
        tools.on_change = lambda: reply.set_steps(tools.section(), tools.views())
        messages = list(request.messages)
        limited = False  # the asker's per-minute limit stopped the steps: asked once more, without tools
        for step in range(tools.max_steps + 1):
            calls = tool_loop.CallAssembler()
            before = len(reply.answer_text)
            asking = replace(request, messages=list(messages))
            if limited:
                asking = replace(asking, tools=())
            elif step == tools.max_steps:  # the budget is spent: one last question, without tools
                tools.note(tool_loop.STEPS_NOTE.format(n=tools.max_steps))
                asking = replace(asking, tools=(), messages=[
                    *messages, {"role": "user", "content": tool_loop.STEPS_PROMPT}])
            try:
                finish = await self._read_model(r, asking, deadline, calls)
            except llm.BadRequest:
                if not asking.tools or reply.has_text:
                    raise
                # The provider refuses `tools`: the question again, without them, said once.
                tools.note(tool_loop.NO_TOOLS_NOTE)
                return await self._read_model(r, replace(asking, tools=()), deadline)
            asked_for = calls.calls()
            if not asked_for or not asking.tools:
                return finish
            r.slow.cancel()
            said = reply.answer_text[before:]
            messages.append(tool_loop.assistant_calls(said, asked_for))
            if await tools.may_step():
                messages += await tools.run(asked_for)
            else:
                limited = True
                tools.note(tool_loop.LIMIT_NOTE)
                messages += tools.refuse(asked_for, tool_loop.LIMIT_RESULT)
            # Each new request gets the model's full wait for its first token.
            deadline = time.monotonic() + self.clock.real(self.settings.model.first_token_budget)
        return None

    # ---- around the turn -------------------------------------------------------------------

    async def _backfill(self, turn: Turn, history: list[HistoryEntry]) -> list[HistoryEntry]:
        """The store had nothing before this message: rebuild from the platform."""
        assert turn.backfill is not None
        try:
            earlier = joined_answers([e for e in await turn.backfill() if e.msg_id != turn.message_id])
        except Exception as exc:
            log.warning("could not rebuild %s from the platform: %s", turn.conversation, exc)
            return history
        earlier = [
            replace(e, content=sanitize.clean(e.content), author=sanitize.clean(e.author))
            for e in earlier[-(self.settings.history_max_turns - 1):]
        ]
        # Their files are read again, as a new message's would be (text kept, images by reference).
        earlier = await self.files.complete(earlier, turn.fetch_file)
        # Unstored, the answer goes on from the platform's copy all the same.
        await self.store_state.call(
            "backfill", lambda: self.conversations.prepend(turn.conversation, earlier), otherwise=None
        )
        return [*earlier, *history]

    async def _refuse(self, turn: Turn, outcome: Outcome, refusal: Refusal) -> None:
        """A limit applies: say so (or nothing, for ignored people and channels); no model call."""
        outcome.outcome = "limited" if refusal.message else "ignored"
        outcome.error = refusal.reason
        metrics.limited(turn.conversation.platform, refusal.reason)
        if refusal.message:
            await self._say(turn, refusal.message)

    async def _say(self, turn: Turn, text: str) -> None:
        try:
            await turn.surface.post(text)
        except Exception as exc:
            log.error("could not post a message in %s: %s", turn.conversation, exc)

    async def _count_usage(self, turn: Turn, outcome: Outcome) -> None:
        if not (outcome.tokens_in or outcome.tokens_out):
            return
        self.usage.add(turn.conversation.channel_scope, turn.author, outcome.tokens_in, outcome.tokens_out,
                       outcome.tool_calls, outcome.persona, outcome.tool_servers)
        if self.usage.batched:
            return  # the upkeep writes it with its next tick
        try:
            await self.usage.flush()
        except StoreError as exc:
            metrics.redis_error("usage")
            metrics.after_answer_failure("usage")
            log.warning("could not record token usage: %s", exc)
        except Exception:  # the answer is over either way: never let this reach the person
            metrics.after_answer_failure("usage")
            log.exception("could not record token usage")

    def _report(self, outcome: Outcome) -> None:
        metrics.answer_finished(
            outcome.platform, outcome.outcome, outcome.tokens_in, outcome.tokens_out,
            ttft_s=outcome.ttft_s, total_s=outcome.total_s if outcome.wrote_final else None,
        )
        metrics.model_tokens(outcome.model, outcome.tokens_in, outcome.tokens_out)
        logs.log_answer(
            platform=outcome.platform, conversation=outcome.conversation, persona=outcome.persona,
            model=outcome.model, outcome=outcome.outcome, tokens_in=outcome.tokens_in,
            tokens_out=outcome.tokens_out, intake_s=outcome.intake_s, ttft_s=outcome.ttft_s,
            total_s=outcome.total_s, error=outcome.error,
            level=logging.INFO if outcome.outcome in ("ok", "ignored", "stopped") else logging.WARNING,
        )
        for hook in self.on_outcome:
            try:
                result = hook(outcome)
                if asyncio.iscoroutine(result):
                    task = asyncio.ensure_future(result)
                    self._hook_tasks.add(task)
                    task.add_done_callback(self._hook_tasks.discard)
            except Exception:
                log.exception("outcome hook failed")


def _assistant_entry(
    reply: ReplyStream, interrupted: bool, stopped: bool = False, tools: tool_loop.ToolUse | None = None
) -> HistoryEntry | None:
    if not reply.has_text:
        return None
    return HistoryEntry(
        role="assistant",
        content=reply.answer_text.strip(),
        tools="\n".join(tools.record) if tools else "",
        msg_id=reply.message_ids[0] if reply.message_ids else "",
        ts=time.time(),
        interrupted=interrupted,
        stopped=stopped,
        more_ids=tuple(reply.message_ids[1:]),
    )
