"""The engine: one `Turn` from its arrival to the stored answer.

    claim (dedup) → conversation lock + history + persona → model stream
    → ReplyStream on the platform's surface → answer stored, lock released

Adapters see the engine as a `bot.contract.Core` (claim, submit, knows, note,
command, and the presets and limits a UI offers); nothing else here knows which
platform it serves. Operations hook in at a few points: limits
before the model call (`bot.ops.limits`), the answer in flight on record while it
streams (`bot.ops.inflight`), token usage (`bot.ops.usage`), and one metrics update and
one log line per turn (`bot.ops.metrics`, `bot.ops.logs`).

Redis is a working copy: when it is unreachable a turn goes on without it (see
`bot.state.resilience`), and once an answer's final text has landed nothing that fails
afterwards (storing it, releasing the lock, usage) is shown to the person.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from typing import Any, TypeVar

from bot.clock import Clock, SystemClock
from bot.config import Settings
from bot.contract import (
    VOTE_DOWN,
    AdminCheck,
    Attachment,
    Author,
    ChannelScope,
    ConversationKey,
    FetchFile,
    HistoryEntry,
    Pressed,
    Sender,
    Turn,
)
from bot.contract.commands import Command, CommandLimits
from bot.conversations import sanitize
from bot.conversations.commands import Commands
from bot.conversations.edits import Edits
from bot.conversations.feedback import THANKS, UNKNOWN, VALUES, Feedback
from bot.conversations.history import ConversationBusy, Conversations, Deferral, joined_answers
from bot.conversations.ordering import ArrivalOrder
from bot.conversations.personas import Persona, PersonaStore, effective, load_presets
from bot.conversations.presses import PressReplies
from bot.delivery.inplace import InPlaceSurface
from bot.delivery.live import LiveAnswer, LiveAnswers, admits
from bot.delivery.pacing import Pacer
from bot.delivery.reply import THINKING, ReplyStream
from bot.delivery.stops import RemoteStops
from bot.delivery.tasks import Stopped, unless_stopped
from bot.files.attachments import Intake, Reader, takes_images
from bot.lru import Lru
from bot.model import llm
from bot.model.fallback import ChainAnswer, ModelChain
from bot.model.model_breaker import ModelBreakers
from bot.model.prompt import InputTooLong, estimate_tokens, message_tokens
from bot.model.providers import Providers
from bot.model.reasoning import InlineThinking
from bot.model.request_size import TOO_LARGE_NOTE, RequestFit
from bot.ops import logs, metrics, tracing
from bot.ops.inflight import InFlight
from bot.ops.leases import Leases
from bot.ops.limits import COMMAND_REFUSALS, Limits, Refusal
from bot.ops.outcome import Outcome, TurnHook
from bot.ops.usage import Usage
from bot.state.breaker import RedisState
from bot.state.interface import Client, Store, StoreError
from bot.state.redis_store import RedisStore
from bot.state.resilience import LocalSeen, PersonaCache

log = logging.getLogger(__name__)

SEEN_TTL = 3600  # Slack retries for up to 5 minutes; keep event ids well past that
LENGTH_NOTE = "_(The answer reached its length limit and stops here.)_"
BUSY_MESSAGE = "I'm still busy with an earlier message in this conversation. Please try again shortly."
STORE_DOWN_MESSAGE = (
    "I can't reach my storage (Redis) right now, so personas and conversation memory can't "
    "be changed. Please try again in a minute."
)
STORE_DOWN_FEEDBACK = "I can't reach my storage (Redis) right now, so feedback can't be recorded."
SLOW_STATUS = "is waiting for the model, which is slow to answer…"
SLOW_AFTER = 10.0  # seconds without a first token before the status says the model is slow
STOPPED_NOTE = "_(stopped)_"
DEFAULT_PRESET = "assistant"  # whose suggested prompts a channel without a preset gets
EDITED_NOTE = "_(The question was edited; answering it again…)_"
ALREADY_FINISHED = "That answer has already finished."

T = TypeVar("T")


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


def _chain_done(outcome: Outcome, answered: ChainAnswer, note: str) -> str:
    """Usage and feedback count against the model that answered; its footnote joins `note`."""
    outcome.model = answered.model or outcome.model
    return _joined(fallback_note(answered), note)


def files_note(notes: list[str]) -> str:
    """What the answer says about the files it left out or cut."""
    return "\n".join(f"_({note})_" for note in notes)


def _cleaned(command: Command | str) -> Command | str:
    """The command with its text cleaned as every message is (`bot.conversations.sanitize`),
    whoever built it."""
    if isinstance(command, str):
        return sanitize.clean(command)
    texts: dict[str, Any] = {
        f.name: sanitize.clean(v) for f in fields(command) if isinstance(v := getattr(command, f.name), str)
    }
    return replace(command, **texts) if texts else command


def _joined(*notes: str) -> str:
    return "\n\n".join(n for n in notes if n)


def interrupted_note(reason: str) -> str:
    return f"_(Interrupted: {reason})_"


class Engine:
    def __init__(
        self, settings: Settings, client: Client, model: llm.LLMClient, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.redis = client
        self.llm = model  # Together's client; the other providers' are made from the settings
        self.providers = Providers(model, settings.chain.providers, self.clock)
        # bot.state: the one way to the state; `redis` stays for the upkeep and the tests.
        self.store: Store = RedisStore(client, settings.redis_prefix)
        self.keys = self.store.keys
        self.store_state = RedisState()
        # Platform budgets, shared by every replica; per process while Redis is away.
        self.pacer = Pacer(client, settings.redis_prefix, self.clock, state=self.store_state)
        self.breakers = ModelBreakers(
            client, settings.redis_prefix, settings.chain, self.clock, state=self.store_state
        )
        self.chain = ModelChain(self.providers, self.breakers, settings)
        self._claimed_at: Lru[tuple[str, str], tuple[float, float]] = Lru(1000)  # for the traces
        self.conversations = Conversations(
            self.store, settings.history_ttl, settings.history_max_turns, self.store_state
        )
        self.persona_cache = PersonaCache()
        self._seen_here = LocalSeen(SEEN_TTL)
        self.presets = load_presets()
        self.files = Reader(settings.attachments)
        self.request_fit = RequestFit(settings.model.request_max_bytes, self.files.sandbox)
        default = Persona(system_prompt=settings.model.system_prompt, preset="default")
        self.personas = PersonaStore(self.store, default)
        self.commands = Commands(
            self.personas,
            self.conversations,
            self.presets,
            default_model=settings.model.model,
            max_tokens_limit=settings.model.context_tokens // 2,
            providers=self.providers.names,
        )
        self.usage = Usage(self.store, settings.redis_prefix)
        self.limits = Limits(settings, self.store, self.usage, self.clock)
        self.inflight = InFlight(self.store, settings.redis_prefix)
        self.feedback_votes = Feedback(self.store)
        self.press_replies = PressReplies(self.clock)  # at most so many answers to repeated presses
        self.leases = Leases(self.store, holder=self.inflight.owner)
        self.accepting = True
        self.on_outcome: list[TurnHook] = []  # extra subscribers; metrics and the log line are built in
        self._slots = asyncio.Semaphore(settings.max_concurrent_replies)
        self._arrival_order = ArrivalOrder()
        self._tasks: set[asyncio.Task[Outcome]] = set()
        self._hook_tasks: set[asyncio.Future[None]] = set()
        self.live = LiveAnswers()  # answers whose model stream is read here
        self.remote_stops = RemoteStops(client, self.keys, self.live.decide)
        self.edits = Edits(self.clock, self._answer_edit, self._interrupt)
        self._superseded: dict[tuple[ConversationKey, str], LiveAnswer] = {}  # stopped by an edit

    # -- the adapter-facing API -------------------------------------------

    def heeds(self, platform: str, sender: Sender) -> bool:
        """Never the bot's own messages nor the platform's notices; other bots where allowed."""
        if sender is Sender.PERSON:
            return True
        return sender is Sender.BOT and self.settings.bots_allowed(platform)

    async def claim(self, platform: str, event_id: str) -> bool:
        """True the first time `(platform, event_id)` is claimed: an event is acted on once
        across retries and replicas, whichever adapter call site sees it.

        False without marking the event once the process stops accepting (shutting
        down), so another replica, or this one after its restart, can take it.
        """
        if not self.accepting:
            return False
        key = self.keys.seen(platform, event_id)  # one key, here and in the store
        # This process's own memory first: a retry it already took needs no round trip,
        # and it is all the dedup there is while Redis is unreachable.
        if not self._seen_here.claim(key):
            return False
        # When Redis cannot say: answer. A retry delivered to another replica meanwhile may
        # be answered twice; a message left unanswered would be worse.
        started = time.monotonic()
        claimed = await self.store_state.call(
            "claim", lambda: self.store.claim(platform, event_id, SEEN_TTL), otherwise=True
        )
        if claimed and tracing.active():  # the turn's trace starts later: it draws the claim then
            self._claimed_at.put((platform, event_id), (started, time.monotonic()))
        return claimed

    def stop_accepting(self) -> None:
        """Shutting down: `claim` answers False from now on; answers in flight carry on."""
        self.accepting = False

    def submit(self, turn: Turn) -> asyncio.Task[Outcome]:
        """Answer `turn` in the background; the task is tracked for a clean shutdown."""
        task = asyncio.create_task(self.answer(turn), name=f"answer {turn.conversation}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def live_answers(self) -> int:
        return len(self._tasks)

    async def knows(self, conversation: ConversationKey) -> bool:
        """Whether the store keeps this conversation (False when Redis cannot say: the
        adapter then asks the platform whether the bot is in the thread)."""
        return await self.store_state.call(
            "knows", lambda: self.conversations.exists(conversation), otherwise=False
        )

    async def note(
        self, conversation: ConversationKey, author: Author, text: str, message_id: str, *,
        attachments: Sequence[Attachment] = (), fetch_file: FetchFile | None = None,
    ) -> bool:
        """Keep a message the bot does not answer (addressed to someone else) as context, its
        files read as a question's are (a later question may be about them).

        Only for conversations the store already keeps; returns whether it was kept.
        """
        if self.limits.screen(conversation, author) is not None:
            return False  # blocked people and channels not allowed are not read at all
        if attachments and not await self.knows(conversation):
            return False  # no download for a conversation that would not keep it
        files = (await self.files.read(attachments, fetch_file)).files if attachments else ()
        entry = HistoryEntry(
            "user", sanitize.clean(text).strip(), author=sanitize.clean(author.name), msg_id=message_id,
            ts=time.time(), attachments=files,
        )
        if not entry.content and not entry.attachments:
            return False
        # Without Redis the platform's thread keeps it: backfill reads it later.
        return await self.store_state.call(
            "note", lambda: self.conversations.note(conversation, entry), otherwise=False
        )

    async def command(
        self,
        command: Command | str,
        *,
        scope: ChannelScope,
        conversation: ConversationKey | None,
        actor: Author,
        can_admin: bool,
        who_may: str = "",
    ) -> str:
        """Run `/persona …` or `/forget` for `actor`: a typed command, or a line to parse.

        `can_admin` is the platform's word (Slack workspace admin, Discord Manage
        Channels); PERSONA_ADMINS and PERSONA_OPEN are added here, the same on every platform.
        """
        thread = conversation or ConversationKey(scope.platform, scope.workspace, scope.channel, "")
        refusal = self.limits.screen(thread, actor)
        if refusal is not None:
            return COMMAND_REFUSALS[refusal.reason]
        try:
            return await self.commands.run(
                _cleaned(command), scope=scope, conversation=conversation, actor=actor,
                can_admin=can_admin or self.listed_persona_admin(actor.id), who_may=who_may,
            )
        except StoreError as exc:
            self.store_state.failed("command", exc)
            return STORE_DOWN_MESSAGE

    async def stop(self, answer_id: str, actor: Author, *, can_admin: AdminCheck) -> Pressed:
        """Stop an answer while the model writes it: the person it answers, or an admin.

        Sets the answer's stop event; `_stream_into` cancels the model stream at once and
        lands the text so far marked stopped. The caller has already acknowledged the press.
        """
        pressed = await self.live.stop(answer_id, actor, can_admin)
        if pressed is not None:
            return pressed
        if not self.settings.redis_url:
            return Pressed(False, ALREADY_FINISHED)  # one process: nobody else streams it
        # Perhaps another replica streams it (bot.delivery.stops): it decides; it cannot ask the platform.
        admin = await admits(can_admin)
        verdict = await self.store_state.call(
            "stop", lambda: self.remote_stops.ask(answer_id, actor.id, admin), otherwise=None
        )
        return Pressed(False, ALREADY_FINISHED) if verdict is None else verdict

    async def listen(self) -> None:
        """Take presses published by other replicas (with Redis only: one process otherwise)."""
        if self.settings.redis_url:
            self.remote_stops.start()

    async def close(self) -> None:
        await self.remote_stops.close()
        await self.files.close()
        await self.providers.aclose()

    async def edited(self, turn: Turn) -> bool:
        """A person edited a message (`turn`: its id, the new text, a surface for an answer).

        The question being answered now, or the last one answered, is answered again in
        place: the old answer's messages are edited into the new one (`bot.delivery.inplace`). Any
        other message the store keeps just takes the new text. Edits of one message
        converge on its latest text (`bot.conversations.edits`). False: not one it keeps, or an edit
        already handled (claimed by `turn.event_id`, across retries and replicas), or one
        older than an edit already taken.
        """
        if self.limits.screen(turn.conversation, turn.author) is not None:
            return False
        if not await self.knows(turn.conversation):
            return False
        if not await self.claim(turn.conversation.platform, turn.event_id or f"{turn.message_id}:edited"):
            return False
        return self.edits.arrived(turn)

    def _interrupt(self, turn: Turn) -> None:
        """Stop the answer to an older version of `turn`'s message, if one streams now; the
        next `_answer_edit` of the message takes its messages over."""
        live = self.live.answering(turn.conversation, turn.message_id)
        if live is not None:
            live.superseded = True
            live.stop.set()
            self._superseded[(turn.conversation, turn.message_id)] = live

    async def _answer_edit(self, turn: Turn) -> asyncio.Task[Outcome] | None:
        """Give the stored message its new text and, when it is the question answered now or
        last, answer it again in place; the new answer's task."""
        text = sanitize.clean(turn.text).strip()
        reuse: list[str] = []
        self._interrupt(turn)  # one that began streaming since the edit arrived
        live = self._superseded.pop((turn.conversation, turn.message_id), None)
        if live is not None and live.task is not None:
            await asyncio.wait({live.task})  # its lock released, nothing of it stored
            reuse = list(live.outcome.reply.message_ids) if live.outcome.reply else []
        try:
            dropped = await self.conversations.revise(turn.conversation, turn.message_id, text, rewind=True)
        except StoreError as exc:
            self.store_state.failed("edit", exc)
            return None
        if dropped is None:
            return None
        if not dropped and live is None:
            return None  # an earlier message: its entry has the new text
        for entry in dropped:
            if entry.role == "assistant" and entry.msg_id:
                reuse += [entry.msg_id, *entry.more_ids]
        metrics.answered_again(turn.conversation.platform)
        return self.submit(replace(turn, surface=InPlaceSurface(turn.surface, reuse)))

    async def context(self, conversation: ConversationKey) -> dict[str, str]:
        nothing: dict[str, str] = {}
        return await self.store_state.call(
            "context", lambda: self.store.context(conversation), otherwise=nothing
        )

    async def remember_context(self, conversation: ConversationKey, fields: dict[str, str]) -> None:
        clean = {k: sanitize.clean(v) for k, v in fields.items()}
        await self.store_state.call(
            "context",
            lambda: self.store.save_context(conversation, clean, self.settings.history_ttl),
            otherwise=None,
        )

    async def suggested_prompts(self, scope: ChannelScope) -> list[str]:
        nothing: dict[str, str] = {}
        raw = await self.store_state.call("persona", lambda: self.store.persona(scope), otherwise=nothing)
        persona = self.personas.parse(raw)
        preset = self.presets.get(persona.preset) or self.presets.get(DEFAULT_PRESET)
        return list(preset.prompts) if preset else []

    async def deleted(self, conversation: ConversationKey, message_id: str) -> bool:
        """A person deleted a message: it leaves the stored history. Whether it was there."""
        return await self.store_state.call(
            "delete", lambda: self.conversations.remove(conversation, message_id), otherwise=False
        )

    async def feedback(self, answer_id: str, actor: Author, value: str, *, reason: str = "") -> Pressed:
        """A 👍 or 👎 press (or a 👎's reason): one vote per person per answer."""
        if value not in VALUES:
            return Pressed(False)
        try:
            known = await self.feedback_votes.vote(answer_id, actor, value, reason)
        except StoreError as exc:
            self.store_state.failed("feedback", exc)
            return Pressed(False, STORE_DOWN_FEEDBACK)
        if not known:
            return Pressed(False, UNKNOWN)
        if reason:
            return Pressed(True, THANKS)  # the form sent: always thanked, never asked again
        ask = value == VOTE_DOWN and self.press_replies.may_ask_reason(answer_id, actor.id)
        thanks = ask or self.press_replies.may_reply(answer_id, actor.id)
        return Pressed(True, THANKS if thanks else "", ask_reason=ask)

    def listed_persona_admin(self, user_id: str) -> bool:
        """May change personas by the settings alone (PERSONA_OPEN, PERSONA_ADMINS), on any platform."""
        return self.settings.persona_open or user_id in self.settings.persona_admins

    def preset_names(self) -> list[str]:
        return sorted(self.presets)

    @property
    def command_limits(self) -> CommandLimits:
        return self.commands.limits

    async def drain(self, timeout: float) -> int:
        """Wait up to `timeout` s for answers in flight; cancel the rest, which land their text
        so far marked "Interrupted: the bot is restarting". Returns how many were cut."""
        deadline = asyncio.get_running_loop().time() + timeout
        # Answers submitted meanwhile (claimed just before the stop) too, and edits being handled.
        while self._tasks or self.edits.busy:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.wait(set(self._tasks) | self.edits.workers, timeout=left)
        still = set(self._tasks) | self.edits.workers
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=10)
        return len(still)

    # -- one turn ---------------------------------------------------------------

    async def answer(self, turn: Turn) -> Outcome:
        c = turn.conversation
        attributes = {"chatbot.platform": c.platform, "gen_ai.conversation.id": str(c)}
        claimed = self._claimed_at.pop((c.platform, turn.event_id), None) if turn.event_id else None
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
            await self._answer(turn, outcome)
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

    async def _count_usage(self, turn: Turn, outcome: Outcome) -> None:
        if not (outcome.tokens_in or outcome.tokens_out):
            return
        self.usage.add(turn.conversation.channel_scope, turn.author, outcome.tokens_in, outcome.tokens_out)
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

    async def _say(self, turn: Turn, text: str) -> None:
        try:
            await turn.surface.post(text)
        except Exception as exc:
            log.error("could not post a message in %s: %s", turn.conversation, exc)

    async def _answer(self, turn: Turn, outcome: Outcome) -> None:
        refusal = self.limits.screen(turn.conversation, turn.author)
        if refusal is not None:
            await self._refuse(turn, outcome, refusal)
            return
        text = sanitize.clean(turn.text).strip()
        if sanitize.is_blank(text) and not turn.attachments:
            outcome.outcome = "ignored"
            await self._say(turn, "Hi! Ask me something and I'll answer here.")
            return
        if len(text) > self.settings.max_input_chars:
            outcome.outcome, outcome.error = "rejected", "input_too_long"
            metrics.limited(turn.conversation.platform, "input_length")
            await self._say(
                turn,
                f"That message is {len(text):,} characters long; I can take up to "
                f"{self.settings.max_input_chars:,}. Please shorten it or split it up.",
            )
            return
        persona: Persona | None = None
        if self.limits.counted:
            # One pipeline: the limits' counters and the persona this answer needs anyway.
            # Without Redis there is nothing to count against: the answer goes ahead.
            with tracing.span("limits"):
                checked = await self.store_state.call(
                    "limits", lambda: self.limits.check(turn.conversation, turn.author), otherwise=None
                )
            if checked is not None:
                refusal, raw = checked
                if refusal is not None:
                    await self._refuse(turn, outcome, refusal)
                    return
                self.persona_cache.remember(turn.conversation.channel_scope, raw)
                persona = self.personas.parse(raw)
        async with self._arrival_order.turn(turn.conversation):
            # The files are read in arrival order (a later message must not overtake one whose
            # files take longer) and before the conversation's lock: the history keeps their
            # text with the message.
            with tracing.span("files", {"chatbot.files": len(turn.attachments)}):
                intake = await self.files.read(turn.attachments, turn.fetch_file)
            user = HistoryEntry(
                role="user", content=text, author=sanitize.clean(turn.author.name), msg_id=turn.message_id,
                ts=time.time(), attachments=intake.files,
            )
            async with self._slots:
                try:
                    await self._locked_answer(turn, user, outcome, persona, intake)
                except ConversationBusy:
                    outcome.outcome, outcome.error = "error", "busy"
                    await self._say(turn, BUSY_MESSAGE)

    async def _refuse(self, turn: Turn, outcome: Outcome, refusal: Refusal) -> None:
        """A limit applies: say so (or nothing, for ignored people and channels); no model call."""
        outcome.outcome = "limited" if refusal.message else "ignored"
        outcome.error = refusal.reason
        metrics.limited(turn.conversation.platform, refusal.reason)
        if refusal.message:
            await self._say(turn, refusal.message)

    async def _locked_answer(
        self, turn: Turn, user: HistoryEntry, outcome: Outcome, persona: Persona | None, intake: Intake,
    ) -> None:
        # Without limits, the persona is read in the round trip that takes the lock.
        scope = turn.conversation.channel_scope
        read_along = scope if persona is None else None
        locking = self.conversations.turn(turn.conversation, user, read_along)
        async with tracing.around(locking, "lock and history", "store") as locked:
            outcome.degraded = not locked.stored
            if persona is None:
                if locked.stored:
                    self.persona_cache.remember(scope, locked.persona)
                    persona = self.personas.parse(locked.persona)
                else:
                    persona = self.personas.parse(self.persona_cache.recall(scope))
            history = locked.history
            if len(history) == 1 and turn.backfill is not None:
                history = await self._backfill(turn, history)
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
                fitted = await self.request_fit.build(  # within the tokens, and the bytes
                    system_prompt, history, self.settings.model.context_tokens - params.max_tokens,
                    images, intake.image_refs,
                )
            except InputTooLong as too_long:
                outcome.outcome, outcome.error = "rejected", "input_too_long"
                await self._say(turn, too_long.user_message)
                return
            prompt = fitted.prompt
            notes += [
                f"`{name}` was left out: it does not fit the model's context."
                for name in prompt.trimmed
            ] + fitted.notes
            if fitted.left_out:
                locked.defer(self.store.leave_out(turn.conversation, fitted.left_out, TOO_LARGE_NOTE))
            request = llm.ChatRequest(
                model=params.model, messages=prompt.messages, temperature=params.temperature,
                max_tokens=params.max_tokens, reasoning=params.reasoning,
            )
            chain = self.chain.models(params.model, persona.fallback)
            locked.answer = await self._stream(
                turn, request, outcome, locked.defer, files_note(notes), chain, fitted.too_large_message
            )
            if outcome.error == llm.RequestTooLarge.kind and fitted.sent:
                # Refused by the server as too large: no later turn sends these images again.
                locked.defer(self.store.leave_out(turn.conversation, list(fitted.sent), TOO_LARGE_NOTE))
            if locked.answer is not None and turn.surface.limits.controls:
                # The answer carries 👍/👎: keep what it was, in the round trip that stores it.
                locked.defer(self.feedback_votes.remember(
                    turn.answer_id, turn.conversation, turn.author, outcome.persona, outcome.model
                ))

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

    async def _stream(
        self, turn: Turn, request: llm.ChatRequest, outcome: Outcome, defer: Deferral, note: str = "",
        chain: Sequence[str] = (), too_large: Callable[[str], str] | None = None,
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
                    return await self._stream_into(reply, turn, request, outcome, note, chain, too_large)
            finally:
                if outcome.first_token_s is not None and not (outcome.tokens_in or outcome.tokens_out):
                    # Cut before the usage chunk: the tokens were still spent; count an estimate.
                    outcome.tokens_in = sum(message_tokens(m) for m in request.messages)
                    outcome.tokens_out = estimate_tokens(reply.text)

    async def _stream_into(
        self, reply: ReplyStream, turn: Turn, request: llm.ChatRequest, outcome: Outcome, note: str = "",
        chain: Sequence[str] = (), too_large: Callable[[str], str] | None = None,
    ) -> HistoryEntry | None:
        """Stream the answer; `note` (files left out) is appended to the final text; `too_large`
        words a 413 for this request (which files)."""
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
                models = chain or [request.model]
                read = self._read_model(reply, inline, request, deadline, outcome, slow, models, answered)
                finish = await unless_stopped(read, live.stop)
        except llm.LLMError as error:
            note = _chain_done(outcome, answered, note)
            outcome.error = error.kind
            log.error("model API error in %s: %s", turn.conversation, error)
            reply.add(inline.flush().answer)
            if not reply.has_text:
                outcome.outcome = "error"
                tell = too_large if too_large and isinstance(error, llm.RequestTooLarge) else None
                await reply.fail(tell(error.user_message) if tell else error.user_message)
                return None
            outcome.outcome = "interrupted"
            await reply.finish(_joined(note, interrupted_note(error.user_message)))
            return self._assistant_entry(reply, interrupted=True)
        except asyncio.CancelledError:
            # Shutting down mid-answer: land what we have, clearly marked.
            note = interrupted_note("the bot is restarting; please ask again.")
            await asyncio.shield(self._finish_cancelled(reply, note))
            raise
        finally:
            slow.cancel()
        note = _chain_done(outcome, answered, note)
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
            return self._assistant_entry(reply, interrupted=False, stopped=True)
        await reply.finish(_joined(LENGTH_NOTE if finish == "length" else "", note))
        return self._assistant_entry(reply, interrupted=False)

    async def _read_model(
        self,
        reply: ReplyStream,
        inline: InlineThinking,
        request: llm.ChatRequest,
        deadline: float,
        outcome: Outcome,
        slow: asyncio.TimerHandle,
        models: Sequence[str],
        answered: ChainAnswer,
    ) -> str | None:
        """Feed the model's stream into `reply`; return its finish reason."""
        finish: str | None = None
        asked = time.monotonic()
        thinking_said = False
        async for delta in self.chain.stream(request, models, deadline, answered):
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
            if delta.usage:
                outcome.tokens_in = delta.usage.prompt_tokens
                outcome.tokens_out = delta.usage.completion_tokens
            finish = delta.finish_reason or finish
        return finish

    async def _finish_cancelled(self, reply: ReplyStream, note: str) -> None:
        try:
            if reply.has_text:
                await reply.finish(note)
            else:
                await reply.fail(note)
        except Exception as exc:
            log.error("could not mark an answer as interrupted: %s", exc)

    def _assistant_entry(
        self, reply: ReplyStream, interrupted: bool, stopped: bool = False
    ) -> HistoryEntry | None:
        if not reply.has_text:
            return None
        return HistoryEntry(
            role="assistant",
            content=reply.text.strip(),
            msg_id=reply.message_ids[0] if reply.message_ids else "",
            ts=time.time(),
            interrupted=interrupted,
            stopped=stopped,
            more_ids=tuple(reply.message_ids[1:]),
        )
