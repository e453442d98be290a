"""The engine: one `Turn` from its arrival to the stored answer.

    claim (dedup) → conversation lock + history + persona → model stream
    → ReplyStream on the platform's surface → answer stored, lock released

Adapters call `claim`, `submit`, `knows` and `command`; nothing else here
knows which platform it serves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis.asyncio as redis

from bot import llm
from bot.commands import Commands
from bot.config import Settings
from bot.history import ConversationBusy, Conversations
from bot.personas import Persona, PersonaStore, effective, load_presets
from bot.prompt import InputTooLong, build_messages
from bot.reply import ReplyStream
from bot.store import Keys
from bot.surface import Author, ChannelScope, ConversationKey, HistoryEntry, Turn

log = logging.getLogger(__name__)

SEEN_TTL = 3600  # Slack retries for up to 5 minutes; keep event ids well past that
LENGTH_NOTE = "_(The answer reached its length limit and stops here.)_"
BUSY_MESSAGE = "I'm still busy with an earlier message in this conversation. Please try again shortly."


def interrupted_note(reason: str) -> str:
    return f"_(Interrupted: {reason})_"


@dataclass
class Outcome:
    """What happened to one turn; logged as one line, counted in metrics."""

    conversation: str
    outcome: str = "ok"  # ok | interrupted | error | rejected | ignored
    persona: str = ""
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    intake_s: float | None = None  # message received → model request sent
    first_token_s: float | None = None
    total_s: float = 0.0
    error: str = ""
    reply: ReplyStream | None = field(default=None, repr=False)

    def log_line(self) -> str:
        def ms(seconds: float | None) -> str:
            return "-" if seconds is None else f"{seconds * 1000:.0f}ms"

        return (
            f"answered conversation={self.conversation} outcome={self.outcome} "
            f"persona={self.persona or '-'} model={self.model or '-'} tokens_in={self.tokens_in} "
            f"tokens_out={self.tokens_out} intake={ms(self.intake_s)} "
            f"first_token={ms(self.first_token_s)} total={ms(self.total_s)}"
            + (f" error={self.error}" if self.error else "")
        )


TurnHook = Callable[[Outcome], Awaitable[None] | None]


class Engine:
    def __init__(self, settings: Settings, client: redis.Redis, model: llm.LLMClient) -> None:
        self.settings = settings
        self.redis = client
        self.llm = model
        self.keys = Keys(settings.redis_prefix)
        self.conversations = Conversations(
            client, self.keys, settings.history_ttl, settings.history_max_turns
        )
        self.presets = load_presets()
        default = Persona(system_prompt=settings.model.system_prompt, preset="default")
        self.personas = PersonaStore(client, self.keys, default)
        self.commands = Commands(
            self.personas,
            self.conversations,
            self.presets,
            default_model=settings.model.model,
            max_tokens_limit=settings.model.context_tokens // 2,
        )
        self.on_outcome: list[TurnHook] = []  # metrics and the like subscribe here
        self._slots = asyncio.Semaphore(settings.max_concurrent_replies)
        self._local_locks: dict[ConversationKey, tuple[asyncio.Lock, int]] = {}
        self._tasks: set[asyncio.Task[Outcome]] = set()
        self._hook_tasks: set[asyncio.Future[None]] = set()

    # -- the adapter-facing API -------------------------------------------

    async def claim(self, platform: str, key: str) -> bool:
        """True the first time `key` is seen: an event is answered once across retries and replicas."""
        return bool(await self.redis.set(self.keys.seen(platform, key), "1", nx=True, ex=SEEN_TTL))

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
        return await self.conversations.exists(conversation)

    async def command(
        self,
        text: str,
        *,
        scope: ChannelScope,
        conversation: ConversationKey | None,
        actor: Author,
        can_admin: bool,
        who_may: str = "",
    ) -> str:
        return await self.commands.run(
            text, scope=scope, conversation=conversation, actor=actor,
            can_admin=can_admin, who_may=who_may,
        )

    def preset_names(self) -> list[str]:
        return sorted(self.presets)

    async def drain(self, timeout: float) -> int:
        """Wait up to `timeout` s for answers in flight; cancel the rest. Returns how many were cut."""
        pending = set(self._tasks)
        if not pending:
            return 0
        _, still = await asyncio.wait(pending, timeout=timeout)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=10)
        return len(still)

    # -- one turn ---------------------------------------------------------------

    async def answer(self, turn: Turn) -> Outcome:
        started = time.monotonic()
        outcome = Outcome(conversation=str(turn.conversation))
        try:
            await self._answer(turn, outcome)
        except asyncio.CancelledError:
            outcome.outcome = "interrupted"
            outcome.error = "shutdown"
            raise
        except Exception as exc:  # the last line of defence: say something, log everything
            log.exception("answer failed in %s", turn.conversation)
            outcome.outcome, outcome.error = "error", type(exc).__name__
            await self._say(turn, "Something went wrong on my side while answering. Please try again.")
        finally:
            outcome.total_s = time.monotonic() - started
            self._report(outcome)
        return outcome

    def _report(self, outcome: Outcome) -> None:
        level = logging.INFO if outcome.outcome in ("ok", "ignored") else logging.WARNING
        log.log(level, outcome.log_line())
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
        text = turn.text.strip()
        if not text:
            outcome.outcome = "ignored"
            await self._say(turn, "Hi! Ask me something and I'll answer here.")
            return
        if len(text) > self.settings.max_input_chars:
            outcome.outcome = "rejected"
            await self._say(
                turn,
                f"That message is {len(text):,} characters long; I can take up to "
                f"{self.settings.max_input_chars:,}. Please shorten it or split it up.",
            )
            return
        user = HistoryEntry(
            role="user", content=text, author=turn.author.name, msg_id=turn.message_id, ts=time.time()
        )
        async with self._local_lock(turn.conversation), self._slots:
            try:
                await self._locked_answer(turn, user, outcome)
            except ConversationBusy:
                outcome.outcome, outcome.error = "error", "busy"
                await self._say(turn, BUSY_MESSAGE)

    async def _locked_answer(self, turn: Turn, user: HistoryEntry, outcome: Outcome) -> None:
        persona_task = asyncio.create_task(self.personas.get(turn.conversation.channel_scope))
        try:
            async with self.conversations.turn(turn.conversation, user) as locked:
                persona = await persona_task
                history = locked.history
                if len(history) == 1 and turn.backfill is not None:
                    history = await self._backfill(turn, history)
                params = effective(persona, self.settings.model)
                outcome.persona, outcome.model = persona.preset or "custom", params.model
                try:
                    messages = build_messages(
                        persona.system_prompt, history,
                        budget=self.settings.model.context_tokens - params.max_tokens,
                    )
                except InputTooLong as too_long:
                    outcome.outcome, outcome.error = "rejected", "input_too_long"
                    await self._say(turn, too_long.user_message)
                    return
                request = llm.ChatRequest(
                    model=params.model, messages=messages, temperature=params.temperature,
                    max_tokens=params.max_tokens, reasoning=params.reasoning,
                )
                locked.answer = await self._stream(turn, request, outcome)
        finally:
            persona_task.cancel()

    async def _backfill(self, turn: Turn, history: list[HistoryEntry]) -> list[HistoryEntry]:
        """The store had nothing before this message: rebuild from the platform."""
        assert turn.backfill is not None
        try:
            earlier = [e for e in await turn.backfill() if e.msg_id != turn.message_id]
        except Exception as exc:
            log.warning("could not rebuild %s from the platform: %s", turn.conversation, exc)
            return history
        earlier = earlier[-(self.settings.history_max_turns - 1):]
        await self.conversations.prepend(turn.conversation, earlier)
        return [*earlier, *history]

    async def _stream(
        self, turn: Turn, request: llm.ChatRequest, outcome: Outcome
    ) -> HistoryEntry | None:
        """Stream the answer onto the surface; return what to store as the assistant turn."""
        finish: str | None = None
        async with ReplyStream(turn.surface) as reply:
            outcome.reply = reply
            outcome.intake_s = time.monotonic() - turn.received_at
            asked = time.monotonic()
            try:
                async for delta in self.llm.stream(request):
                    if delta.content:
                        if outcome.first_token_s is None:
                            outcome.first_token_s = time.monotonic() - asked
                        reply.add(delta.content)
                    if delta.usage:
                        outcome.tokens_in = delta.usage.prompt_tokens
                        outcome.tokens_out = delta.usage.completion_tokens
                    finish = delta.finish_reason or finish
            except llm.LLMError as error:
                outcome.error = error.kind
                log.error("model API error in %s: %s", turn.conversation, error)
                if not reply.has_text:
                    outcome.outcome = "error"
                    await reply.fail(error.user_message)
                    return None
                outcome.outcome = "interrupted"
                await reply.finish(interrupted_note(error.user_message))
                return self._assistant_entry(reply, interrupted=True)
            except asyncio.CancelledError:
                # Shutting down mid-answer: land what we have, clearly marked.
                note = interrupted_note("the bot is restarting; please ask again.")
                await asyncio.shield(self._finish_cancelled(reply, note))
                raise
            await reply.finish(LENGTH_NOTE if finish == "length" else "")
            return self._assistant_entry(reply, interrupted=False)

    async def _finish_cancelled(self, reply: ReplyStream, note: str) -> None:
        try:
            if reply.has_text:
                await reply.finish(note)
            else:
                await reply.fail(note)
        except Exception as exc:
            log.error("could not mark an answer as interrupted: %s", exc)

    def _assistant_entry(self, reply: ReplyStream, interrupted: bool) -> HistoryEntry | None:
        if not reply.has_text:
            return None
        return HistoryEntry(
            role="assistant",
            content=reply.text.strip(),
            msg_id=reply.message_ids[0] if reply.message_ids else "",
            ts=time.time(),
            interrupted=interrupted,
        )

    # -- in-process ordering -------------------------------------------------

    def _local_lock(self, conversation: ConversationKey) -> _LocalLock:
        return _LocalLock(self._local_locks, conversation)


class _LocalLock:
    """A FIFO lock per conversation within this process, dropped when nobody waits.

    asyncio.Lock wakes waiters in arrival order, so two messages in one
    conversation are answered in the order they came; the Redis lock then
    guards against other replicas.
    """

    def __init__(
        self, table: dict[ConversationKey, tuple[asyncio.Lock, int]], key: ConversationKey
    ) -> None:
        self._table = table
        self._key = key

    async def __aenter__(self) -> None:
        lock, users = self._table.get(self._key, (asyncio.Lock(), 0))
        self._table[self._key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._release_user()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._table[self._key][0].release()
        self._release_user()

    def _release_user(self) -> None:
        lock, users = self._table[self._key]
        if users <= 1:
            del self._table[self._key]
        else:
            self._table[self._key] = (lock, users - 1)
