"""One summary asked for (`Core.summarize`), from the ask to the final text:

    limits + persona → read the messages → plan (one request, or map-reduce) → stream → usage

The map-reduce itself is `bot.conversations.summaries`; citations become links in
`bot.conversations.citations`. Like an answer, a summary streams into a `ReplyStream` (pacing,
the Stop button), counts against the asker's limits, and ends with one metrics update.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from bot.clock import Clock
from bot.config import Settings
from bot.contract import HistoryEntry
from bot.contract.summaries import SourceMessage, SourceUnreadable, SummaryAsk
from bot.conversations import sanitize
from bot.conversations.citations import Citations
from bot.conversations.history import Conversations
from bot.conversations.personas import Persona, PersonaStore, effective
from bot.conversations.summaries import Limits, Plan, Summariser, plan
from bot.delivery.live import LiveAnswer, LiveAnswers
from bot.delivery.pacing import Pacer
from bot.delivery.reply import RESTARTING_NOTE, STOPPED_NOTE, ReplyStream, interrupted_note
from bot.delivery.tasks import Stopped, unless_stopped
from bot.model import llm
from bot.model.fallback import ChainAnswer, ModelChain
from bot.model.prompt import estimate_tokens
from bot.model.reasoning import InlineThinking
from bot.ops import metrics
from bot.ops.limits import Limits as AskerLimits
from bot.ops.outcome import Outcome
from bot.ops.usage import Usage
from bot.state.breaker import RedisState
from bot.state.resilience import PersonaCache

log = logging.getLogger(__name__)

THE_BOT = "the bot"  # the author of the bot's own answers, as a summary names them


def reading(total: int) -> str:
    return f"Reading {total:,} messages…"


def read_so_far(done: int, total: int) -> str:
    if done == total:
        return f"Read all {total:,} messages; writing the summary…"
    return f"Read {done:,} of {total:,} messages…"


def nothing_to_summarise(window: str) -> str:
    return f"There are no messages to summarise{f' in {window}' if window else ''}."


def left_out_note(summary_plan: Plan) -> str:
    if not summary_plan.left_out:
        return ""
    return (f"_(The oldest {summary_plan.left_out:,} messages were left out: {summary_plan.reason}. "
            f"This summary covers the latest {summary_plan.read:,}.)_")


@dataclass
class Spent:
    """Tokens a summary's requests used (the usage chunk's, else an estimate)."""

    tokens_in: int = 0
    tokens_out: int = 0


class Summaries:
    """Summaries as the engine runs them; built from the engine's parts."""

    def __init__(
        self, settings: Settings, clock: Clock, *, conversations: Conversations, personas: PersonaStore,
        persona_cache: PersonaCache, store_state: RedisState, limits: AskerLimits, chain: ModelChain,
        pacer: Pacer, live: LiveAnswers, usage: Usage,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.conversations = conversations
        self.personas = personas
        self.persona_cache = persona_cache
        self.store_state = store_state
        self.limits = limits
        self.chain = chain
        self.pacer = pacer
        self.live = live
        self.usage = usage

    async def run(self, ask: SummaryAsk) -> Outcome:
        c = ask.conversation
        outcome = Outcome(str(c), platform=c.platform, scope=str(c.channel_scope), author=ask.author.id)
        spent = Spent()
        summariser: Summariser | None = None
        read = 0
        try:
            persona = await self._go_ahead(ask, outcome)
            if persona is None:
                return outcome
            messages = await self._read(ask, outcome)
            if messages is None:
                return outcome
            summariser, read = await self._summarise(ask, persona, messages, outcome, spent)
        finally:
            requests = summariser.run.requests if summariser else 0
            metrics.summary_finished(c.platform, ask.kind, outcome.outcome, read, requests)
            if spent.tokens_in or spent.tokens_out:
                metrics.model_tokens(outcome.model, spent.tokens_in, spent.tokens_out)
                self.usage.add(c.channel_scope, ask.author, spent.tokens_in, spent.tokens_out)
                if not self.usage.batched:
                    await self.store_state.call("usage", self.usage.flush, otherwise=None)
        return outcome

    async def _go_ahead(self, ask: SummaryAsk, outcome: Outcome) -> Persona | None:
        """The persona, once the asker's limits allow the summary (None: refused, said so)."""
        refusal = self.limits.screen(ask.conversation, ask.author)
        if refusal is None and self.limits.counted:
            checked = await self.store_state.call(
                "limits", lambda: self.limits.check(ask.conversation, ask.author), otherwise=None
            )
            if checked is not None:
                refusal, raw = checked
                if refusal is None:
                    return self.personas.parse(raw)
        if refusal is not None:
            outcome.outcome, outcome.error = "limited", refusal.reason
            metrics.limited(ask.conversation.platform, refusal.reason)
            if refusal.message:
                await _say(ask, refusal.message)
            return None
        scope = ask.conversation.channel_scope
        persona = await self.store_state.call("persona", lambda: self.personas.get(scope), otherwise=None)
        return persona or self.personas.parse(self.persona_cache.recall(scope))

    async def _read(self, ask: SummaryAsk, outcome: Outcome) -> Sequence[SourceMessage] | None:
        try:
            if ask.read is not None:
                messages = await ask.read()
            else:
                messages = [_from_history(e) for e in await self.conversations.load(ask.conversation)]
        except SourceUnreadable as gone:
            outcome.outcome, outcome.error = "error", "unreadable"
            await _say(ask, str(gone))
            return None
        messages = [m for m in messages if m.text.strip()]
        if not messages:
            outcome.outcome = "empty"
            await _say(ask, nothing_to_summarise(ask.window))
            return None
        return messages

    async def _summarise(
        self, ask: SummaryAsk, persona: Persona, messages: Sequence[SourceMessage], outcome: Outcome,
        spent: Spent,
    ) -> tuple[Summariser, int]:
        params = effective(persona, self.settings.model)
        outcome.persona, outcome.model = persona.preset or "custom", params.model
        bounds = self.settings.summaries
        limits = Limits(
            budget=self.settings.model.context_tokens - params.max_tokens,
            answer_tokens=params.max_tokens,
            part_tokens=min(bounds.part_tokens, params.max_tokens),
            max_messages=bounds.max_messages,
            max_requests=bounds.max_requests,
            concurrency=bounds.concurrency,
        )
        # The channel's summary prompt (`/persona summary`) follows its own.
        system = sanitize.clean("\n\n".join(p for p in (persona.system_prompt, persona.summary_prompt) if p))
        summary_plan = plan([_cleaned(m) for m in messages], system, limits)
        models = self.chain.models(params.model, persona.fallback)

        async def ask_model(request_messages: list[dict[str, Any]], max_tokens: int) -> AsyncIterator[str]:
            request = llm.ChatRequest(
                model=params.model, messages=request_messages, temperature=params.temperature,
                max_tokens=max_tokens, reasoning=params.reasoning,
            )
            async for piece in self._stream(request, models, spent):
                yield piece

        async with ReplyStream(ask.surface, self.pacer, answer_id=ask.answer_id) as reply:
            # No 👍/👎: a summary is not an answer the conversation keeps, so a vote would find
            # nothing to count (Stop stays, while it streams).
            reply.final_controls = None
            outcome.reply = reply
            reply.set_status_text(reading(summary_plan.read))  # at once: the first progress
            shown_at = self.clock.now()

            async def progress(done: int, total: int) -> None:
                nonlocal shown_at
                # The last part always shows: the combining that follows takes a while.
                if done == total or self.clock.now() - shown_at >= bounds.progress_interval:
                    shown_at = self.clock.now()
                    reply.set_status_text(read_so_far(done, total))

            summariser = Summariser(ask_model, system, limits, progress)
            await self._write(ask, reply, summariser, summary_plan, outcome)
        return summariser, summary_plan.read

    async def _write(
        self, ask: SummaryAsk, reply: ReplyStream, summariser: Summariser, summary_plan: Plan,
        outcome: Outcome,
    ) -> None:
        """Run the plan into `reply` until it ends or Stop is pressed; land the final text."""
        given = summary_plan.given
        links: dict[int, str] = {}

        async def link_of(number: int) -> str:
            if number not in links:
                links[number] = await _link(ask, given[number])
            return links[number]

        citations = Citations(given, link_of)

        async def write(piece: str) -> None:
            reply.add(await citations.feed(sanitize.clean(piece)))

        live = LiveAnswer(ask.author, outcome, ask.conversation, "", asyncio.current_task())
        note = left_out_note(summary_plan)
        try:
            with self.live.reading(reply.id, live), metrics.live_stream(ask.conversation.platform):
                finish = await unless_stopped(summariser.summarise(summary_plan, write), live.stop)
        except asyncio.CancelledError:  # shutting down: land what there is, marked
            outcome.outcome, outcome.error = "interrupted", "shutdown"
            await asyncio.shield(reply.land(RESTARTING_NOTE))
            raise
        except llm.LLMError as error:
            outcome.outcome, outcome.error = "error", error.kind
            log.error("model API error in a summary of %s: %s", ask.conversation, error)
            reply.add(await citations.flush())
            if reply.has_text:
                await reply.finish(interrupted_note(error.user_message))
            else:
                await reply.fail(error.user_message)
            return
        reply.add(await citations.flush())
        if isinstance(finish, Stopped):
            outcome.outcome = "stopped"
            await reply.land(STOPPED_NOTE)
            return
        await reply.finish(note)

    async def _stream(
        self, request: llm.ChatRequest, models: Sequence[str], spent: Spent
    ) -> AsyncIterator[str]:
        """One request's answer text (reasoning left out), its tokens added to `spent`."""
        inline = InlineThinking()
        deadline = time.monotonic() + self.clock.real(self.settings.model.first_token_budget)
        counted = False
        text = ""
        try:
            async for delta in self.chain.stream(request, models, deadline, ChainAnswer()):
                if delta.usage:
                    spent.tokens_in += delta.usage.prompt_tokens
                    spent.tokens_out += delta.usage.completion_tokens
                    counted = True
                if delta.content and (answer := inline.feed(delta.content).answer):
                    text += answer
                    yield answer
            if rest := inline.flush().answer:
                yield rest
        finally:
            if not counted:  # cut before the usage chunk: the tokens were still spent
                spent.tokens_in += sum(estimate_tokens(m["content"]) for m in request.messages)
                spent.tokens_out += estimate_tokens(text)


def _from_history(entry: HistoryEntry) -> SourceMessage:
    files = " ".join(f"[file: {a.name}]" for a in entry.attachments)
    author = entry.author or (THE_BOT if entry.role == "assistant" else "someone")
    return SourceMessage(entry.msg_id, author, f"{entry.content} {files}".strip(), entry.ts)


def _cleaned(message: SourceMessage) -> SourceMessage:
    return SourceMessage(message.id, sanitize.clean(message.author), sanitize.clean(message.text), message.ts)


async def _link(ask: SummaryAsk, message: SourceMessage) -> str:
    if ask.link is None or not message.id:
        return ""
    try:
        return await ask.link(message)
    except Exception as exc:  # a citation without its link still reads
        log.info("no link to message %s: %s", message.id, exc)
        return ""


async def _say(ask: SummaryAsk, text: str) -> None:
    try:
        await (ask.tell(text) if ask.tell is not None else ask.surface.post(text))
    except Exception as exc:
        log.error("could not post a message in %s: %s", ask.conversation, exc)
