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

An answer's tool steps (`StepSurface`) go as chunks on the writes the answer makes anyway:
one `task_update` per call (its card moving from in progress to complete or error), and a
`plan_update` once several have run. A write that carries them sends its text as a
`markdown_text` chunk too; an answer posted plainly (no stream) keeps them as a section of its text.

A stream is stopped when the next message of the answer starts, when `finish()` is
called, or after `IDLE_STOP` seconds without a write while no tool call runs (the core does not
yet tell a surface that an answer is over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.surface import (
    Place,
    SlackSurface,
    StatusSupport,
    error_code,
    slack_write,
)
from bot.contract import Controls, StepView, SurfaceLimits

log = logging.getLogger(__name__)

STREAM_LIFETIME = 270.0  # Slack ends a stream after about 5 minutes; stop before that
IDLE_STOP = 10.0
EXPIRED = "message_not_in_streaming_state"
PLAN_TITLE = "Using {n} tools"


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
        self._steps: list[StepView] = []  # the answer's steps as they are now
        self._sent_steps: dict[str, StepView] = {}  # as the thread last got each one
        self._sent_plan = 0  # how many steps the plan title last named
        self._plain_first = ""  # the answer's first message, when it was posted without a stream

    def show_steps(self, steps: Sequence[StepView]) -> bool:
        self._steps = list(steps)
        return True  # posted plainly after all, the answer's first message gets them as text

    def _step_chunks(self) -> list[dict[str, Any]]:
        """What changed since the last write: a plan title when several steps run, then a task
        card per step that is new or moved on."""
        chunks: list[dict[str, Any]] = []
        if len(self._steps) > 1 and len(self._steps) != self._sent_plan:
            chunks.append({"type": "plan_update", "title": PLAN_TITLE.format(n=len(self._steps))})
        for step in self._steps:
            if self._sent_steps.get(step.id) != step:
                card = {k: v for k, v in asdict(step).items() if v and k != "line"}
                chunks.append({"type": "task_update", **card})
        return chunks

    def _take_steps(self) -> tuple[list[dict[str, Any]], tuple[dict[str, StepView], int]]:
        """The step chunks due, counted as sent from now (an idle stop racing a write must not
        send them twice), and what was sent before, to put back if the write fails."""
        before = (self._sent_steps, self._sent_plan)
        chunks = self._step_chunks()
        self._sent_steps = {step.id: step for step in self._steps}
        self._sent_plan = len(self._steps) if len(self._steps) > 1 else self._sent_plan
        return chunks, before

    def _untake_steps(self, before: tuple[dict[str, StepView], int]) -> None:
        self._sent_steps, self._sent_plan = before

    def _plain(self, text: str) -> str:
        """The text of the answer's first message posted without a stream: the steps as a section
        at its top, as in update mode."""
        if not self._steps:
            return text
        return "\n".join(step.line for step in self._steps) + "\n\n" + text

    @staticmethod
    def _with_chunks(text: str, chunks: list[dict[str, Any]]) -> dict[str, Any]:
        """The text of a stream write and the step chunks due, as Slack takes them."""
        if not chunks:
            return {"markdown_text": text}
        if text:
            chunks = [*chunks, {"type": "markdown_text", "text": text}]
        return {"chunks": chunks}

    async def post(self, text: str, *, complete: bool = False, controls: Controls | None = None) -> str:
        # Native streams carry no buttons (`SurfaceLimits.controls` is off): `controls` stays None.
        if self.fell_back or complete:
            # A complete text needs no stream (and spends no Tier-2 start or stop on one).
            # Posted before the stream before it is stopped: the post window counted this
            # post when the core paid for it, and a stop first would send it late, closer
            # to the next post than Slack's second (an answer's parts).
            message_id = await self._post_plainly(text)
            await self.finish()  # a new message: the one before it is complete
            return message_id
        await self.finish()  # a new message: the one before it is complete
        chunks, before = self._take_steps()
        try:
            response = await slack_write(
                "chat.startStream",
                self.client.chat_startStream(
                    channel=self.place.channel,
                    thread_ts=self.place.thread_ts,
                    recipient_team_id=self.place.team_id,
                    recipient_user_id=self.place.user_id,
                    **self._with_chunks(text, chunks),
                ),
            )
        except SlackApiError as exc:
            log.info("chat.startStream refused (%s); posting and updating", error_code(exc))
            self._untake_steps(before)
            self.fell_back = True
            return await self._post_plainly(text)
        except BaseException:
            self._untake_steps(before)
            raise
        if self._first_post_at is None:
            self._first_post_at = time.monotonic()
        self._answer_shown()
        self.live = LiveStream(str(response["ts"]), text, time.monotonic())
        self._arm_idle_stop()
        return self.live.ts

    async def _post_plainly(self, text: str) -> str:
        first = self._first_post_at is None
        message_id = await super().post(self._plain(text) if first else text)
        if first:
            self._plain_first = message_id
        return message_id

    async def edit(self, message_id: str, text: str, *, controls: Controls | None = None) -> None:
        if message_id == self._plain_first:
            await super().edit(message_id, self._plain(text))
            return
        live = self.live
        if live is None or live.ts != message_id:
            if text:  # no text: a card's change alone, which only a live stream can carry
                await super().edit(message_id, text)
            return
        too_old = time.monotonic() - live.started > STREAM_LIFETIME
        if too_old or not text.startswith(live.sent):
            await self.finish()
            await super().edit(message_id, text)
            return
        delta = text[len(live.sent) :]
        if not delta and not self._step_chunks():
            return
        chunks, before = self._take_steps()
        try:
            await slack_write(
                "chat.appendStream",
                self.client.chat_appendStream(channel=self.place.channel, ts=live.ts,
                                              **self._with_chunks(delta, chunks)),
            )
        except BaseException as exc:
            self._untake_steps(before)
            if not isinstance(exc, SlackApiError) or error_code(exc) != EXPIRED:
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
                # Steps not yet sent (the last card's end) ride on the stop.
                chunks, before = self._take_steps()
                await slack_write("chat.stopStream", self.client.chat_stopStream(
                    channel=self.place.channel, ts=live.ts, chunks=chunks or None))
                return
            except Exception as exc:
                self._untake_steps(before)
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
        if any(step.status == "in_progress" for step in self._steps):
            # A tool call is running: its card ends on this stream, so the stream waits for it.
            self._arm_idle_stop()
            return
        task = asyncio.create_task(self.finish())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        for task in list(self._stopping):
            with contextlib.suppress(Exception):
                await task
        await self.finish()
