"""Stop across replicas: a Stop press that reaches a process other than the one streaming
the answer (Slack's HTTP mode behind a load balancer, several replicas).

The process that got the press publishes it on one Redis channel (`Keys.stops`) and waits
up to `WAIT` seconds for a reply on a list of its own (`Keys.stop_reply`). Every process
listens on the channel; the one streaming that answer decides (the asker, or an admin: the
pressing process has asked the platform already) and pushes its verdict onto the reply list.
No reply within `WAIT`: no process streams it any more.

One published message per press of an answer not streaming here, nothing per answer;
pub/sub messages reach every subscriber, on a Cluster too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.contract import Pressed
from bot.state.interface import Client, StoreError
from bot.state.keys import Keys

log = logging.getLogger(__name__)

WAIT = 1.0  # seconds the pressing process waits for the streaming one
REPLY_TTL = 10
RECONNECT = 1.0
CANCEL_TRIES, CANCEL_WAIT = 5, 0.5


@dataclass(frozen=True)
class StopRequest:
    answer_id: str
    actor_id: str
    admin: bool  # the platform says the presser administers the channel
    reply_to: str  # the reply list's key


Decide = Callable[[StopRequest], Awaitable[Pressed | None]]  # None: not an answer streaming here


class RemoteStops:
    def __init__(self, client: Client, keys: Keys, decide: Decide) -> None:
        self.client = client
        self.keys = keys
        self.decide = decide
        self._listener: asyncio.Task[None] | None = None
        self._closed = False
        self.listening = asyncio.Event()  # subscribed (tests and benchmarks wait for it)

    async def ask(self, answer_id: str, actor_id: str, admin: bool) -> Pressed | None:
        """Publish a press; the streaming process's verdict, or None if no process streams it."""
        reply_to = self.keys.stop_reply(secrets.token_hex(8))
        request = StopRequest(answer_id, actor_id, admin, reply_to)
        listeners = await self.client.publish(self.keys.stops, json.dumps(request.__dict__))
        if not listeners:
            return None
        popped = await self.client.blpop([reply_to], timeout=WAIT)
        if not popped:
            return None
        data = json.loads(popped[1])
        return Pressed(bool(data["done"]), str(data["message"]))

    def start(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="remote stops")

    async def close(self) -> None:
        self._closed = True
        task, self._listener = self._listener, None
        # redis-py may swallow a cancellation that lands while it connects (it goes on to
        # subscribe): cancel again once it waits on the channel, a few times at most.
        for _ in range(CANCEL_TRIES):
            if task is None or task.done():
                return
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_WAIT)

    async def _listen(self) -> None:
        while not self._closed:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                # A PING first: a Redis Cluster client learns the slots with its first command,
                # and its pub/sub needs them to pick the channel's node (KeyError without).
                await self.client.ping()
                await pubsub.subscribe(self.keys.stops)
                self.listening.set()
                async for message in pubsub.listen():
                    await self._handle(message)
            except StoreError as exc:  # Redis away: presses reach only this process meanwhile
                self.listening.clear()
                log.debug("stop channel unavailable: %s", exc)
                await asyncio.sleep(RECONNECT)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _handle(self, message: dict[str, Any]) -> None:
        try:
            data = json.loads(message["data"])
            request = StopRequest(
                str(data["answer_id"]), str(data["actor_id"]), bool(data["admin"]), str(data["reply_to"]),
            )
        except (ValueError, KeyError, TypeError):
            return  # not one of ours
        if not request.reply_to.startswith(self.keys.stop_reply("")):
            return
        verdict = await self.decide(request)
        if verdict is None:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.rpush(request.reply_to, json.dumps(verdict.__dict__))
            pipe.expire(request.reply_to, REPLY_TTL)
            await pipe.execute()
