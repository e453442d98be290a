"""The engine: the core as adapters see it (`bot.contract.Core`).

Adapters claim an event (dedup across retries and replicas), submit a `Turn`, run a
command, press Stop or 👍/👎, report an edit or a delete; nothing here knows which platform
it serves. A submitted turn is answered by the pipeline in `bot.turn` (limits → files →
lock + history + persona → prompt → stream → store); this module builds the parts both
share and answers everything else itself.

Redis is a working copy: when it is unreachable the engine goes on without it (see
`bot.state.resilience`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any

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
from bot.contract.summaries import SummaryAsk
from bot.conversations import sanitize
from bot.conversations.commands import Commands
from bot.conversations.edits import Edits
from bot.conversations.feedback import THANKS, UNKNOWN, VALUES, Feedback
from bot.conversations.history import Conversations
from bot.conversations.personas import Persona, PersonaStore, load_presets
from bot.conversations.presses import PressReplies
from bot.conversations.summarizing import Summaries
from bot.delivery.inplace import InPlaceSurface
from bot.delivery.live import LiveAnswer, LiveAnswers, admits
from bot.delivery.pacing import Pacer
from bot.delivery.stops import RemoteStops, StopRequest
from bot.files.attachments import Reader
from bot.lru import Lru
from bot.model import llm
from bot.model.fallback import ModelChain
from bot.model.model_breaker import ModelBreakers
from bot.model.providers import Providers
from bot.model.request_size import RequestFit
from bot.ops import metrics, tracing
from bot.ops.inflight import InFlight
from bot.ops.leases import Leases
from bot.ops.limits import COMMAND_REFUSALS, Limits
from bot.ops.outcome import Outcome, TurnHook
from bot.ops.usage import Usage
from bot.state.breaker import RedisState
from bot.state.interface import Client, Store, StoreError
from bot.state.redis_store import RedisStore
from bot.state.resilience import LocalSeen, PersonaCache
from bot.tools.approval import RELAY, Approvals, relayed
from bot.tools.choice import ToolCatalog
from bot.tools.servers import ToolServers
from bot.turn import Turns

log = logging.getLogger(__name__)

SEEN_TTL = 3600  # Slack retries for up to 5 minutes; keep event ids well past that
STORE_DOWN_MESSAGE = (
    "I can't reach my storage (Redis) right now, so personas and conversation memory can't "
    "be changed. Please try again in a minute."
)
STORE_DOWN_FEEDBACK = "I can't reach my storage (Redis) right now, so feedback can't be recorded."
DEFAULT_PRESET = "assistant"  # whose suggested prompts a channel without a preset gets
ALREADY_FINISHED = "That answer has already finished."
APPROVAL_GONE = "That request is no longer waiting for an answer."


def _cleaned(command: Command | str) -> Command | str:
    """The command with its text cleaned as every message is (`bot.conversations.sanitize`),
    whoever built it."""
    if isinstance(command, str):
        return sanitize.clean(command)
    texts: dict[str, Any] = {
        f.name: sanitize.clean(v) for f in fields(command) if isinstance(v := getattr(command, f.name), str)
    }
    return replace(command, **texts) if texts else command


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
        default = Persona(system_prompt=settings.model.system_prompt, preset="default")
        self.personas = PersonaStore(self.store, default)
        # MCP_CONFIG's servers (bot/tools/): started with `listen`, stopped with `close`.
        self.tools = ToolServers(settings.tools.servers)
        self.commands = Commands(
            self.personas,
            self.conversations,
            self.presets,
            default_model=settings.model.model,
            max_tokens_limit=settings.model.context_tokens // 2,
            providers=self.providers.names,
            tools=ToolCatalog(self.tools, settings.tools.default) if self.tools else None,
        )
        self.usage = Usage(self.store, settings.redis_prefix)
        self.limits = Limits(settings, self.store, self.usage, self.clock)
        self.inflight = InFlight(self.store, settings.redis_prefix)
        self.feedback_votes = Feedback(self.store)
        self.press_replies = PressReplies(self.clock)  # at most so many answers to repeated presses
        self.leases = Leases(self.store, holder=self.inflight.owner)
        self.accepting = True
        self.on_outcome: list[TurnHook] = []  # extra subscribers; metrics and the log line are built in
        self._tasks: set[asyncio.Task[Outcome]] = set()
        self.live = LiveAnswers()  # answers whose model stream is read here
        self.approvals = Approvals(self.clock, settings.tools.approval_timeout)
        self.remote_stops = RemoteStops(client, self.keys, self._decide_press)
        self.edits = Edits(self.clock, self._answer_edit, self._interrupt)
        self._superseded: dict[tuple[ConversationKey, str], LiveAnswer] = {}  # stopped by an edit
        self.turns = Turns(
            settings, self.clock, store=self.store, store_state=self.store_state,
            conversations=self.conversations, personas=self.personas, persona_cache=self.persona_cache,
            limits=self.limits, files=self.files,
            request_fit=RequestFit(settings.model.request_max_bytes, self.files.sandbox),
            chain=self.chain, pacer=self.pacer, inflight=self.inflight, live=self.live,
            feedback_votes=self.feedback_votes, usage=self.usage, on_outcome=self.on_outcome,
            claim_times=lambda platform, event_id: self._claimed_at.pop((platform, event_id), None),
            tools=self.tools,
            approvals=self.approvals,
        )
        self.summaries = Summaries(
            settings, self.clock, conversations=self.conversations, personas=self.personas,
            persona_cache=self.persona_cache, store_state=self.store_state, limits=self.limits,
            chain=self.chain, pacer=self.pacer, live=self.live, usage=self.usage,
        )

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

    def summarize(self, ask: SummaryAsk) -> asyncio.Task[Outcome]:
        """Summarise in the background (`bot.conversations.summarizing`), tracked as answers are."""
        task = asyncio.create_task(self.summaries.run(ask), name=f"summary {ask.conversation}")
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

    async def approve(self, approval_id: str, actor: Author, approved: bool) -> Pressed:
        """Approve or Deny a tool call waiting for its asker (bot/tools/approval.py), here or on
        the replica where it waits (relayed as a Stop press is)."""
        pressed = self.approvals.press(approval_id, actor.id, approved)
        if pressed is not None:
            return pressed
        if not self.settings.redis_url:
            return Pressed(False, APPROVAL_GONE)
        verdict = await self.store_state.call(
            "approve", lambda: self.remote_stops.ask(relayed(approval_id, approved), actor.id, False),
            otherwise=None,
        )
        return Pressed(False, APPROVAL_GONE) if verdict is None else verdict

    async def _decide_press(self, request: StopRequest) -> Pressed | None:
        """A press another replica published: an approval's, or a Stop's."""
        if request.answer_id.startswith(RELAY):
            return await self.approvals.decide(request)
        return await self.live.decide(request)

    async def listen(self) -> None:
        """Take presses published by other replicas (with Redis only: one process otherwise)."""
        if self.settings.redis_url:
            self.remote_stops.start()
        await self.tools.start()

    async def close(self) -> None:
        await self.tools.stop()
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

    # -- one turn: bot/turn.py ---------------------------------------------------

    async def answer(self, turn: Turn) -> Outcome:
        """Answer `turn` now (`submit` runs it in the background)."""
        return await self.turns.answer(turn)
