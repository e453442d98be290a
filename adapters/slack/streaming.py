"""Native Slack streaming (`SLACK_STREAMING=native`): chat.startStream / appendStream / stopStream.

The core hands a surface the whole text so far; a Slack stream takes only what is
new. So each edit appends the difference from what was already streamed. Whenever
streaming cannot carry on, the surface falls back to the post-and-update way for
that answer, and the text still lands:

- Slack refuses chat.startStream (feature off, a channel type it does not support):
  the message is posted with chat.postMessage and edited with chat.update;
- a stream stops accepting text (about 5 minutes after it started,
  `message_not_in_streaming_state`), or the core rewrites text already streamed
  (closing a code fence where it splits a long answer): the stream is stopped and
  the message finished with chat.update on its ts.

The three methods are called directly rather than through slack_sdk's `chat_stream`
helper: the helper buffers text itself (the core already coalesces tokens) and keeps
a failed append in its buffer, so a retried edit would stream that text twice.

A stream is stopped when the next message of the answer starts, when `finish()` is
called, or after `IDLE_STOP` seconds without a write (the core does not yet tell a
surface that an answer is over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.surface import (
    Place,
    SlackSurface,
    StatusSupport,
    error_code,
    slack_write,
)
from bot.contract import Controls, SurfaceLimits

log = logging.getLogger(__name__)

STREAM_LIFETIME = 270.0  # Slack ends a stream after about 5 minutes; stop before that
IDLE_STOP = 10.0
EXPIRED = "message_not_in_streaming_state"


@dataclass
class LiveStream:
    ts: str
    sent: str
    started: float


class NativeStreamSurface(SlackSurface):
    def __init__(
        self,
        client: AsyncWebClient,
        place: Place,
        limits: SurfaceLimits,
        status: StatusSupport,
    ) -> None:
        super().__init__(client, place, limits, status)
        self.live: LiveStream | None = None
        self.fell_back = False
        self._idle: asyncio.TimerHandle | None = None
        self._stopping: set[asyncio.Task[None]] = set()

    async def post(self, text: str, *, complete: bool = False, controls: Controls | None = None) -> str:
        # Native streams carry no buttons (`SurfaceLimits.controls` is off): `controls` stays None.
        if self.fell_back or complete:
            # A complete text needs no stream (and spends no Tier-2 start or stop on one).
            # Posted before the stream before it is stopped: the post window counted this
            # post when the core paid for it, and a stop first would send it late, closer
            # to the next post than Slack's second (an answer's parts).
            message_id = await super().post(text)
            await self.finish()  # a new message: the one before it is complete
            return message_id
        await self.finish()  # a new message: the one before it is complete
        try:
            response = await slack_write(
                "chat.startStream",
                self.client.chat_startStream(
                    channel=self.place.channel,
                    thread_ts=self.place.thread_ts,
                    recipient_team_id=self.place.team_id,
                    recipient_user_id=self.place.user_id,
                    markdown_text=text,
                ),
            )
        except SlackApiError as exc:
            log.info("chat.startStream refused (%s); posting and updating", error_code(exc))
            self.fell_back = True
            return await super().post(text)
        if self._first_post_at is None:
            self._first_post_at = time.monotonic()
        self._answer_shown()
        self.live = LiveStream(str(response["ts"]), text, time.monotonic())
        self._arm_idle_stop()
        return self.live.ts

    async def edit(self, message_id: str, text: str, *, controls: Controls | None = None) -> None:
        live = self.live
        if live is None or live.ts != message_id:
            await super().edit(message_id, text)
            return
        too_old = time.monotonic() - live.started > STREAM_LIFETIME
        if too_old or not text.startswith(live.sent):
            await self.finish()
            await super().edit(message_id, text)
            return
        delta = text[len(live.sent) :]
        if not delta:
            return
        try:
            await slack_write(
                "chat.appendStream",
                self.client.chat_appendStream(channel=self.place.channel, ts=live.ts, markdown_text=delta),
            )
        except SlackApiError as exc:
            if error_code(exc) != EXPIRED:
                raise
            log.info("stream %s expired; finishing it with chat.update", live.ts)
            self.live = None
            await super().edit(message_id, text)
            return
        live.sent = text
        self._arm_idle_stop()

    async def finish(self, *, affordable: bool = True) -> None:
        """End the live stream, if any: its message is complete.

        With chat.stopStream, or, when that budget is spent or Slack refuses it, with a
        plain chat.update of the whole text, which ends the streaming state too: a
        message must never be left looking as if it were still being written.
        """
        live, self.live = self.live, None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if live is None:
            return
        if affordable:
            try:
                await slack_write(
                    "chat.stopStream", self.client.chat_stopStream(channel=self.place.channel, ts=live.ts)
                )
                return
            except Exception as exc:
                log.info("chat.stopStream failed for %s (%s); ending it with chat.update", live.ts,
                         error_code(exc))
        try:
            await super().edit(live.ts, live.sent)
        except Exception as exc:
            # Its text is all there; an unstopped stream ends by itself later.
            log.warning("could not end stream %s: %s", live.ts, error_code(exc))

    def _arm_idle_stop(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(IDLE_STOP, self._stop_idle)

    def _stop_idle(self) -> None:
        self._idle = None
        task = asyncio.create_task(self.finish())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        for task in list(self._stopping):
            with contextlib.suppress(Exception):
                await task
        await self.finish()
