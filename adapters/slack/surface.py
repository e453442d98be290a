"""How an answer appears in a Slack thread: post, edit, status.

`SlackSurface` posts the first text with chat.postMessage in the thread and edits it
with chat.update, both as `markdown_text` (see `formatting`). A 429 becomes
`SurfaceRateLimited` with Slack's `Retry-After`, so the core backs off every answer
in the same window and retries; the final text always lands.

The status ("is thinking…") uses assistant.threads.setStatus, which Slack clears by
itself when the reply is posted. Where Slack refuses it (an older app config without
the scope, an Enterprise policy), a reaction on the person's message shows it
instead, removed when the reply appears.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.slack.controls import message_fields
from adapters.slack.formatting import to_slack_markdown
from bot.contract import Controls, SurfaceLimits, SurfaceRateLimited
from bot.contract.budgets import Window
from bot.ops import metrics

log = logging.getLogger(__name__)

PLATFORM = "slack"
STATUS_REACTION = "hourglass_flowing_sand"

# markdown_text takes up to 12,000 characters; leave room for the code fence that
# the surface closes while an answer grows.
MAX_CHARS = 11_900
# Slack's published pace: chat.update is Tier 3 ("50+ per minute, sporadic bursts
# welcome") per workspace, chat.postMessage about 1 a second per channel,
# chat.appendStream Tier 4 (about 100 a minute), chat.startStream and chat.stopStream
# Tier 2 (about 20 a minute). The windows live in Redis, shared by every live answer
# and every replica in the workspace/channel; the Tier 3 and 4 windows widen while
# Slack accepts (see `bot.delivery.pacing`). Slack counts a call when it arrives, the window
# when it is sent: the periods are a little longer than Slack's so a call delayed on
# the way cannot land inside the last.
MINUTE = 61.0
UPDATE_LIMIT, UPDATE_MOST = 50, 100
POST_LIMIT, POST_PER = 1, 1.1
APPEND_LIMIT, APPEND_MOST = 100, 200
TIER2_LIMIT = 20


@dataclass(frozen=True)
class Place:
    """Where an answer goes, and for whom."""

    team_id: str
    channel: str
    thread_ts: str
    user_id: str  # the person being answered (native streams need them)
    message_ts: str  # the person's message (the status reaction goes on it)


class StatusSupport:
    """Whether assistant.threads.setStatus works for this app; learnt once per process."""

    def __init__(self) -> None:
        self.assistant_status = True


async def slack_write(method: str, call: Awaitable[AsyncSlackResponse]) -> AsyncSlackResponse:
    """Run one Web API write, counting it; a 429 becomes `SurfaceRateLimited`."""
    try:
        response = await call
    except SlackApiError as exc:
        if exc.response.status_code == 429:
            metrics.platform_write(PLATFORM, method, 429)
            raise SurfaceRateLimited(retry_after(exc)) from None
        metrics.platform_write(PLATFORM, method, "error")
        raise
    metrics.platform_write(PLATFORM, method, "ok")
    return response


def retry_after(exc: SlackApiError) -> float:
    try:
        return max(0.0, float(exc.response.headers.get("Retry-After", 1)))
    except (TypeError, ValueError):
        return 1.0


def error_code(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error") or exc.response.status_code)
    return type(exc).__name__


class SlackSurface:
    def __init__(
        self,
        client: AsyncWebClient,
        place: Place,
        limits: SurfaceLimits,
        status: StatusSupport,
    ) -> None:
        self.client = client
        self.place = place
        self._limits = limits
        self._status = status
        self._status_lock = asyncio.Lock()
        self._reacted = False
        self._status_set_at: float | None = None  # when a setStatus call last landed
        self._first_post_at: float | None = None
        self._clearing: asyncio.Task[None] | None = None

    @property
    def limits(self) -> SurfaceLimits:
        return self._limits

    async def post(self, text: str, *, complete: bool = False, controls: Controls | None = None) -> str:
        if self._first_post_at is None:
            self._first_post_at = time.monotonic()
        response = await slack_write(
            "chat.postMessage",
            self.client.chat_postMessage(
                channel=self.place.channel,
                thread_ts=self.place.thread_ts,
                unfurl_links=False,
                unfurl_media=False,
                **message_fields(to_slack_markdown(text), controls),
            ),
        )
        self._answer_shown()
        return str(response["ts"])

    def _answer_shown(self) -> None:
        # The answer is visible: the "working" sign goes. Done here, not only when the
        # core asks, because the core may cancel its request when the answer is final.
        if self._clearing is None:
            self._clearing = asyncio.create_task(self.set_status(None))

    async def edit(self, message_id: str, text: str, *, controls: Controls | None = None) -> None:
        await slack_write(
            "chat.update",
            self.client.chat_update(
                channel=self.place.channel, ts=message_id, **message_fields(to_slack_markdown(text), controls)
            ),
        )

    async def delete(self, message_id: str) -> None:
        await slack_write("chat.delete", self.client.chat_delete(channel=self.place.channel, ts=message_id))

    async def set_status(self, status: str | None) -> None:
        # Shielded: the core cancels a status write once the answer is final, and a
        # reaction half set (or a clear cut short) would stay on the message for good.
        await asyncio.shield(self._set_status(status))

    async def _set_status(self, status: str | None) -> None:
        # One at a time, so a "clear" never overtakes the "set" it clears.
        async with self._status_lock:
            if status is None:
                await self._clear_status()
            elif self._first_post_at is not None:
                return  # the answer is already showing
            elif self._status.assistant_status and await self._assistant_status(status):
                return
            elif not self._reacted:
                await self.client.reactions_add(
                    channel=self.place.channel, timestamp=self.place.message_ts, name=STATUS_REACTION
                )
                self._reacted = True

    async def _assistant_status(self, status: str) -> bool:
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=self.place.channel, thread_ts=self.place.thread_ts, status=status
            )
        except SlackApiError as exc:
            if exc.response.status_code == 429:
                return True  # cosmetic: skip it rather than fall back
            log.info("assistant.threads.setStatus refused (%s); using a reaction", error_code(exc))
            self._status.assistant_status = False
            return False
        self._status_set_at = time.monotonic()
        return True

    async def _clear_status(self) -> None:
        if self._reacted:
            self._reacted = False
            await self.client.reactions_remove(
                channel=self.place.channel, timestamp=self.place.message_ts, name=STATUS_REACTION
            )
        # Slack clears the status when the reply is posted; only a status that landed
        # after the reply (a slow call overtaken by a fast answer) needs clearing.
        set_at, posted_at = self._status_set_at, self._first_post_at
        if set_at is not None and (posted_at is None or set_at > posted_at):
            self._status_set_at = None
            await self.client.assistant_threads_setStatus(
                channel_id=self.place.channel, thread_ts=self.place.thread_ts, status=""
            )


def surface_limits(place: Place, native: bool, *, parts: bool) -> SurfaceLimits:
    """An answer's limits in `place`: its characters, and the windows its writes draw on.
    `parts`: answers go on in parts where edits cannot keep them moving (docs/slack.md, "Busy
    workspaces: answers in parts"); SLACK_PROGRESS=single turns that off."""
    team = place.team_id
    post = Window(f"slack:{team}:chat.postMessage:{place.channel}", POST_LIMIT, POST_PER)
    if not native:
        update = Window(f"slack:{team}:chat.update", UPDATE_LIMIT, MINUTE, UPDATE_MOST)
        # Buttons ride on blocks, which post-and-update messages take (native streams do not).
        return SurfaceLimits(
            MAX_CHARS, 1.0, post_windows=(post,), edit_windows=(update,), controls=True, parts=parts
        )
    return SurfaceLimits(
        MAX_CHARS,
        1.0,
        parts=parts,
        post_windows=(post,),
        edit_windows=(Window(f"slack:{team}:chat.appendStream", APPEND_LIMIT, MINUTE, APPEND_MOST),),
        # Not learnt: a probe beyond Tier 2 would cost a stream its stop.
        start_windows=(Window(f"slack:{team}:chat.startStream", TIER2_LIMIT, MINUTE),),
        finish_windows=(Window(f"slack:{team}:chat.stopStream", TIER2_LIMIT, MINUTE),),
    )
