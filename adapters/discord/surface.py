"""How an answer appears on Discord: typing, then a reply that is edited as the model writes.

The budgets are Discord's (docs/architecture.md, "Pacing"): about 5 message creates and 5 edits
per 5 s per channel, shared by every live answer in that channel, and 50
requests per second for the whole bot. The surfaces of one adapter share the
same `Window`s, kept in Redis by the core's pacer (`bot.delivery.pacing`), so every
live answer in every process of the bot paces together and never runs into a 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import discord

from bot.contract import (
    REASON_LABEL,
    REASON_MAX_CHARS,
    REASON_TITLE,
    VOTE_DOWN,
    VOTE_UP,
    Controls,
    SurfaceLimits,
)
from bot.contract.budgets import POST, Pacing, Window
from bot.ops import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
PLATFORM = "discord"

NO_PINGS = discord.AllowedMentions.none()

# 2,000 characters is Discord's limit; the margin covers characters Discord
# may count as two (it measures in UTF-16 code units for some scripts and emoji).
MAX_CHARS = 1900
CHANNEL_WRITES = 5
# discord.py makes the request that empties a bucket sleep until the bucket resets
# before it returns, and counts requests in flight twice: the write emptying a channel's
# bucket stalls its caller for up to 5 s. So writes to one channel bucket go one at a
# time (`Pace.serial`), and the last slot of a window is kept for finals: a stalled
# final has already landed, a stalled early post would hold up its answer's final.
CHANNEL_SPARE = 1
# Discord's windows start when a request *arrives*; ours when it is sent. A
# small margin keeps the two from disagreeing by a few milliseconds.
CHANNEL_SECONDS = 5.0 + 0.1
# The bot-wide budget is counted by Discord when requests arrive, and they can
# bunch up on the way (discord.py's own queues, a busy event loop, a collector's pause):
# keep a margin. 48 let 52 arrive within one of Discord's seconds in 2 of 5 CI runs (50 DMs
# × 2 turns); 46 keeps bench/discord_bench.py's "50 at once" p90 within 1 s (693, 857 ms).
BOT_REQUESTS = 46
BOT_SECONDS = 1.0 + 0.1
TYPING_REFRESH = 8.0  # a typing indicator lasts 10 s
TYPING_MAX = 120.0  # never show typing longer than this, whatever happens
BOT_WINDOW = Window("discord:bot:requests", BOT_REQUESTS, BOT_SECONDS)
# Button custom ids: "chatbot:stop:ANSWER", "chatbot:up:ANSWER", "chatbot:down:ANSWER"; the
# 👎 reason modal's: "chatbot:reason:ANSWER".
CONTROL_PREFIX = "chatbot"
STOP, REASON = "stop", "reason"  # the votes are the core's VOTE_UP and VOTE_DOWN
APPROVE, DENY = "approve", "deny"  # a tool call's (bot/tools/approval.py): "chatbot:approve:APPROVAL"
CONTROL_KINDS = (STOP, VOTE_UP, VOTE_DOWN, REASON, APPROVE, DENY)
REASON_INPUT = "reason"

Channel = (
    discord.TextChannel
    | discord.Thread
    | discord.DMChannel
    | discord.PartialMessageable
    | discord.VoiceChannel
    | discord.StageChannel
    | discord.GroupChannel
)


async def counted(method: str, call: Awaitable[T]) -> T:
    """One REST write, counted in the metrics. discord.py waits out 429s itself, so
    they show as lag here, never as errors."""
    try:
        result = await call
    except discord.HTTPException as exc:
        metrics.platform_write(PLATFORM, method, exc.status)
        raise
    metrics.platform_write(PLATFORM, method, "ok")
    return result


@dataclass
class Pace:
    """The adapter's shared budgets: per channel (creates, edits) and per bot."""

    pacer: Pacing
    bot: Window = BOT_WINDOW
    # Weak: a channel's lock lives while a write holds or awaits it, not for the bot's lifetime.
    _serial: weakref.WeakValueDictionary[str, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )

    def serial(self, bucket: str, channel_id: int) -> asyncio.Lock:
        """One write at a time per channel bucket ("create", "edit", "delete"), in this process."""
        key = f"{bucket}:{channel_id}"
        lock = self._serial.get(key)
        if lock is None:
            lock = self._serial[key] = asyncio.Lock()
        return lock

    async def request(self) -> None:
        """Wait for a slot in the bot-wide budget (a read or other REST call)."""
        await self.pacer.use((self.bot,), priority=POST)

    async def spare_request(self) -> bool:
        """A slot for something cosmetic (typing), only if answers do not need it."""
        return (await self.pacer.progress((self.bot,), "typing")).ok

    def limits(self, channel_id: int) -> SurfaceLimits:
        creates, edits = (
            Window(f"discord:bot:{kind}:{channel_id}", CHANNEL_WRITES, CHANNEL_SECONDS, spare=CHANNEL_SPARE)
            for kind in ("create", "edit")
        )
        return SurfaceLimits(
            max_chars=MAX_CHARS,
            min_edit_interval=1.0,
            post_windows=(creates, self.bot),
            edit_windows=(edits, self.bot),
            controls=True,
        )


def control_id(kind: str, answer_id: str) -> str:
    return f"{CONTROL_PREFIX}:{kind}:{answer_id}"


def parse_control(custom_id: str) -> tuple[str, str] | None:
    """(kind, answer id) from a button's custom id; None if it is not one of the bot's."""
    prefix, _, rest = custom_id.partition(":")
    kind, _, answer_id = rest.partition(":")
    if prefix != CONTROL_PREFIX or kind not in CONTROL_KINDS or not answer_id:
        return None
    return kind, answer_id


def controls_view(controls: Controls | None) -> discord.ui.View | None:
    """The buttons of `controls` as a message component row; None: no buttons.

    The presses are handled by the adapter's `on_interaction` from the custom ids, not
    by the view, so it is stopped at once: discord.py then keeps no copy of it per message.
    """
    if controls is None or not (controls.stop or controls.feedback or controls.approval):
        return None
    view = discord.ui.View(timeout=None)
    if controls.approval:
        for kind, label, style in ((APPROVE, "Approve", discord.ButtonStyle.success),
                                   (DENY, "Deny", discord.ButtonStyle.danger)):
            custom_id = control_id(kind, controls.answer_id)
            view.add_item(discord.ui.Button(label=label, style=style, custom_id=custom_id))
    elif controls.stop:
        view.add_item(discord.ui.Button(
            label="Stop", style=discord.ButtonStyle.secondary, custom_id=control_id(STOP, controls.answer_id)
        ))
    else:
        for kind, emoji in ((VOTE_UP, "👍"), (VOTE_DOWN, "👎")):
            custom_id = control_id(kind, controls.answer_id)
            style = discord.ButtonStyle.secondary
            view.add_item(discord.ui.Button(emoji=emoji, style=style, custom_id=custom_id))
    view.stop()
    return view


def reason_modal(answer_id: str) -> discord.ui.Modal:
    """What a 👎 opens: one optional field of why. Its submission is handled from the custom id
    (like the buttons), so the modal is stopped at once and discord.py keeps no copy of it."""
    modal = discord.ui.Modal(title=REASON_TITLE, custom_id=control_id(REASON, answer_id), timeout=None)
    modal.add_item(discord.ui.TextInput(
        label=REASON_LABEL, custom_id=REASON_INPUT,
        style=discord.TextStyle.paragraph, required=False, max_length=REASON_MAX_CHARS,
    ))
    modal.stop()
    return modal


def submitted_text(components: list[dict[str, object]], custom_id: str) -> str:
    """The value of the text input `custom_id` in a modal submission (action rows or labels)."""
    for component in components:
        inner = component.get("components") or ([component["component"]] if "component" in component else [])
        for item in inner if isinstance(inner, list) else []:
            if isinstance(item, dict) and item.get("custom_id") == custom_id:
                return str(item.get("value") or "")
    return ""


class DiscordSurface:
    """One answer in one channel: the first part replies to the user, each next part to the last."""

    def __init__(
        self,
        channel: Channel,
        *,
        reply_to: int | None,
        pace: Pace,
        on_post: Callable[[int], None] = lambda _id: None,
    ) -> None:
        self.channel = channel
        self._reply_to = reply_to
        self._pace = pace
        self._limits = pace.limits(channel.id)
        self._on_post = on_post
        self._typing: asyncio.Task[None] | None = None

    @property
    def limits(self) -> SurfaceLimits:
        return self._limits

    async def post(self, text: str, *, complete: bool = False, controls: Controls | None = None) -> str:
        self.stop_typing()  # a message ends Discord's typing indicator anyway
        view = controls_view(controls) or discord.utils.MISSING
        if self._reply_to is None:
            send = self.channel.send(text, allowed_mentions=NO_PINGS, view=view)
        else:
            reference = discord.MessageReference(
                message_id=self._reply_to, channel_id=self.channel.id, fail_if_not_exists=False
            )
            send = self.channel.send(
                text, reference=reference, allowed_mentions=NO_PINGS, mention_author=False, view=view
            )
        async with self._pace.serial("create", self.channel.id):
            message = await counted("create_message", send)
        self._reply_to = message.id
        self._on_post(message.id)
        return str(message.id)

    async def edit(self, message_id: str, text: str, *, controls: Controls | None = None) -> None:
        partial = discord.PartialMessage(channel=self.channel, id=int(message_id))
        # view=None removes the buttons a message had; a surface without controls never sends any.
        view = controls_view(controls) if self._limits.controls else discord.utils.MISSING
        async with self._pace.serial("edit", self.channel.id):
            await counted("edit_message", partial.edit(content=text, allowed_mentions=NO_PINGS, view=view))

    async def delete(self, message_id: str) -> None:
        partial = discord.PartialMessage(channel=self.channel, id=int(message_id))
        async with self._pace.serial("delete", self.channel.id):
            await counted("delete_message", partial.delete())

    async def set_status(self, status: str | None) -> None:
        """Any status shows as "typing…" until the first text; None stops it."""
        if status is None:
            self.stop_typing()
        elif self._typing is None or self._typing.done():
            self._typing = asyncio.create_task(self._keep_typing())

    def stop_typing(self) -> None:
        if self._typing is not None:
            self._typing.cancel()
            self._typing = None

    async def _keep_typing(self) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + TYPING_MAX
        while loop.time() < until:
            # Cosmetic: only when the bot-wide budget has room beyond what answers need.
            if await self._pace.spare_request():
                try:
                    await self.channel.typing()
                except discord.HTTPException as exc:
                    log.debug("typing indicator failed: %s", exc)
            await asyncio.sleep(TYPING_REFRESH)

    async def close(self) -> None:
        """Stop anything still running (the typing loop) once the answer is done."""
        task, self._typing = self._typing, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
