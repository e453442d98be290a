"""A fake Slack that the real slack_sdk and slack-bolt talk to, on 127.0.0.1.

One aiohttp server serves:
- the Web API: `POST /api/<method>` (form, JSON or query parameters, Bearer token
  checked), answering like Slack: HTTP 200 with `{"ok": ...}`, or HTTP 429 with
  `Retry-After` and `{"ok": false, "error": "ratelimited"}`;
- a Socket Mode websocket (`apps.connections.open` hands out its URL): it says
  hello, pushes `events_api` / `slash_commands` / `interactive` envelopes on demand
  and records the acks with their payloads. As Slack does, each envelope goes to
  one of the app's open connections (here in turn), never to all of them, and an
  app gets at most 10 connections: the 11th is told `too_many_websockets`;
- `response_url` endpoints for slash commands and shortcuts (`respond()`);
- OAuth (`oauth.v2.access`: installs, token rotation; `tests/fakes/slack_oauth.py`): every
  workspace that installs the app gets its own bot token, bot user and bot id, and each
  call is answered as that workspace's bot (`Call.token` says which token it used).

It records every call and keeps each channel's messages, so a test reads what a
person would see. `tests/fakes/slack_events.py` builds the payloads and signs HTTP
deliveries.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.slack_events import (
    SignedSender,
    block_actions,
    event_callback,
    message_shortcut,
    new_id,
    slash_command,
    view_submission,
)
from tests.fakes.slack_oauth import Install, OAuthApp, OAuthError
from tests.fakes.slack_state import (
    MARKDOWN_LIMIT,
    TEXT_LIMIT,
    Call,
    Channels,
    File,
    Limiter,
    Message,
    RateLimit,
    TsClock,
    User,
)
from tests.fakes.timeline import Timeline
from tests.support.clock import REAL_TIME, FastClock

TASK_STATUSES = ("pending", "in_progress", "complete", "error")  # a task_update chunk's
JSON_FIELDS = ("blocks", "chunks", "attachments", "metadata", "view", "prompts")
SOCKET_CONNECTIONS_PER_APP = 10  # Slack's limit of Socket Mode connections per app


class SlackError(Exception):
    """A Web API method's `{"ok": false, "error": ...}` answer."""

    def __init__(self, error: str, status: int = 200, retry_after: int | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.retry_after = retry_after


@dataclass
class Ack:
    envelope_id: str
    payload: dict[str, Any] | None
    at: float


@dataclass
class Failure:
    error: str
    times: int | None  # None: every call from now on
    status: int = 200
    retry_after: int | None = None
    after: int = 0  # calls answered before it applies


@dataclass
class Status:
    channel: str
    thread_ts: str
    status: str
    at: float


@dataclass
class Response:
    """A POST to a response_url (what `respond()` sent)."""

    key: str
    body: dict[str, Any]
    at: float


class FakeSlack:
    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test",
        app_token: str = "xapp-test",
        team_id: str = "T0FAKE",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        bot_name: str = "chatbot",
        app_id: str = "A0FAKEAPP",
        echo_bot_messages: bool = False,
        stream_ttl: float = 300.0,
        clock: FastClock = REAL_TIME,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        # When true, the bot's own posts and edits come back as `message` events, as
        # they do for an app subscribed to message.* events.
        self.echo_bot_messages = echo_bot_messages
        self.stream_ttl = stream_ttl
        # Its rate windows, stream lifetimes and records run on `clock` (tests/support/clock.py).
        self.clock = clock

        self.calls: list[Call] = []
        self.messages = Channels()
        self.users: dict[str, User] = {}
        self.limiter = Limiter()
        self.acks: dict[str, Ack] = {}
        self.envelopes: list[dict[str, Any]] = []
        self.responses: list[Response] = []
        self.statuses: list[Status] = []
        self.ephemeral: list[dict[str, Any]] = []  # chat.postEphemeral calls, as sent
        self.views: list[dict[str, Any]] = []  # modals opened with views.open, as sent
        # The assistant panel: suggested prompts and titles set, by (channel, thread_ts).
        self.suggested: dict[tuple[str, str], list[dict[str, str]]] = {}
        self.titles: dict[tuple[str, str], str] = {}
        # conversations.info: what a test says a channel is (name, topic, purpose).
        self.channel_info: dict[str, dict[str, Any]] = {}
        self.reactions: dict[tuple[str, str], set[str]] = {}
        # Every message the bot ever created (deleted ones too), keyed by (channel, ts):
        # what it showed and when, for tests that measure what people saw meanwhile.
        self.timelines: dict[tuple[str, str], Timeline] = {}
        self.connections_opened = 0
        # HTTP-mode delivery target for echoes (set by `deliver_http_to`).
        self.http_sender: SignedSender | None = None

        self._failures: dict[str, list[Failure]] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_numbers: dict[int, int] = {}  # id(ws) -> its connection number (1, 2, …)
        self._socket_count = itertools.count(1)
        # Envelope id -> the number of the connection it was sent on (one, as Slack does).
        self.delivered_to: dict[str, int] = {}
        self._next_socket = itertools.count()
        self._ts = TsClock()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.add_user(User(bot_user_id, bot_name, is_bot=True, team_id=team_id))
        self.oauth = OAuthApp()
        # The single-workspace bot (SLACK_BOT_TOKEN); installs add their own.
        self.home = Install(team_id, "Fake Team", bot_user_id=bot_user_id, bot_id=bot_id)
        self.oauth.add_token(bot_token, self.home)
        self._caller = self.home  # the workspace whose token the current call carries
        self.files: dict[str, File] = {}
        # Every download of a file's url_private: (file id, whether the bot token came with it).
        self.downloads: list[tuple[str, bool]] = []
        self.download_tokens: list[str] = []  # the token each download carried, in the same order
        self.file_ids = itertools.count(1)

    # ---------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_get("/link/", self._socket)
        app.router.add_post("/response/{key}", self._response_url)
        app.router.add_get("/files-pri/{team_file}/{name}", self._download)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for ws in list(self._sockets):
            await ws.close()
        if self.http_sender is not None:
            await self.http_sender.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What goes into SLACK_API_URL / AsyncWebClient(base_url=...)."""
        return f"{self.base}/api/"

    # ------------------------------------------------------------ test controls
    def add_user(self, user: User) -> User:
        if not user.team_id:
            user.team_id = self.team_id
        self.users[user.id] = user
        return user

    def enforce_limits(
        self,
        *,
        update_limit: int = 50,
        update_per: float = 60.0,
        post_limit: int = 1,
        post_per: float = 1.0,
    ) -> None:
        """Tier-3-like limits: chat.update per workspace, chat.postMessage per channel."""
        self.limiter.set(RateLimit("chat.update", update_limit, update_per, "workspace"))
        self.limiter.set(RateLimit("chat.postMessage", post_limit, post_per, "channel"))

    def limit(self, method: str, limit: int, per: float, scope: str = "workspace") -> None:
        self.limiter.set(RateLimit(method, limit, per, scope))

    def no_limits(self) -> None:
        self.limiter.clear()

    def fail_next(
        self,
        method: str,
        error: str,
        *,
        times: int | None = 1,
        status: int | None = None,
        retry_after: int = 1,
        after: int = 0,
    ) -> None:
        """Answer the next `times` calls of `method` with `error` (None: always), once `after`
        more calls have been answered (a failure mid-way through pages).

        `error="ratelimited"` answers HTTP 429 with `Retry-After: retry_after`.
        """
        code = status if status is not None else (429 if error == "ratelimited" else 200)
        self._failures.setdefault(method, []).append(
            Failure(error, times, code, retry_after if code == 429 else None, after)
        )

    def expire_streams(self) -> None:
        """Every live stream stops accepting text, as after Slack's ~5 minutes."""
        for message in self.messages.all():
            if message.streaming:
                message.stream_started = -1e9

    def deliver_http_to(self, url: str, signing_secret: str) -> SignedSender:
        """Send echoes (and `sender` deliveries) to an HTTP-mode app at `url`."""
        self.http_sender = SignedSender(url, signing_secret)
        return self.http_sender

    # ---------------------------------------------------- what people do / see
    def add_file(self, name: str, data: bytes, mimetype: str = "text/plain") -> File:
        """A file uploaded to the workspace; share it with `user_message(..., files=[file])`."""
        file_id = f"F{next(self.file_ids):06d}"
        url = f"{self.base}/files-pri/{self.team_id}-{file_id}/{name}"
        self.files[file_id] = File(file_id, name, mimetype, data, url)
        return self.files[file_id]

    def user_message(
        self, channel: str, user: str, text: str, *, thread_ts: str | None = None,
        files: list[File] | None = None, ts: str | None = None,
    ) -> Message:
        """A person posts a message (it becomes part of the channel's state); `ts`: written then
        (an older message, already in the channel)."""
        message = Message(
            ts=ts or self._ts.next(), channel=channel, user=user, text=text, thread_ts=thread_ts,
            files=[f.to_api() for f in files or []],
        )
        self.messages.add(message)
        self._notify()
        return message

    def assistant_thread(self, user: str, dm: str, looking_at: str | None) -> tuple[Message, dict[str, Any]]:
        """`user` opens a thread with the app from Slack's assistant panel while looking at the
        channel `looking_at`: the thread's root (Slack's own), and the assistant_thread_started event."""
        root = Message(
            ts=self._ts.next(), channel=dm, user=self.bot_user_id, text="New chat", bot_id=self.bot_id
        )
        self.messages.add(root)
        return root, self.assistant_event("assistant_thread_started", user, root, looking_at)

    def assistant_event(self, kind: str, user: str, root: Message, looking_at: str | None) -> dict[str, Any]:
        context: dict[str, Any] = {}
        if looking_at:
            context = {"channel_id": looking_at, "team_id": self.team_id, "enterprise_id": None}
        return {
            "type": kind,
            "assistant_thread": {
                "user_id": user, "context": context, "channel_id": root.channel, "thread_ts": root.ts,
            },
            "event_ts": self._ts.next(),
        }

    def edit_message(self, message: Message, text: str) -> dict[str, Any]:
        """A person edits their message; returns the `message_changed` event Slack sends."""
        before = message.to_api()
        message.text = text
        self._notify()
        ts = self._ts.next()
        return {
            "type": "message", "subtype": "message_changed", "hidden": True,
            "channel": message.channel, "channel_type": channel_type(message.channel),
            "message": message.to_api() | {"edited": {"user": message.user, "ts": ts}},
            "previous_message": before, "ts": ts, "event_ts": ts,
        }

    def delete_message(self, message: Message) -> dict[str, Any]:
        """A person deletes their message; returns the `message_deleted` event Slack sends."""
        before = message.to_api()
        self.messages.delete(message.channel, message.ts)
        self._notify()
        ts = self._ts.next()
        return {
            "type": "message", "subtype": "message_deleted", "hidden": True,
            "channel": message.channel, "channel_type": channel_type(message.channel),
            "deleted_ts": message.ts, "previous_message": before, "ts": ts, "event_ts": ts,
        }

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        return self.messages.thread(channel, thread_ts)

    def bot_replies(self, channel: str, thread_ts: str) -> list[Message]:
        return [m for m in self.thread(channel, thread_ts) if m.bot_id == self.bot_id and m.ts != thread_ts]

    def seen_text(self, channel: str, thread_ts: str) -> str:
        """Everything the bot shows in a thread, its messages joined in order."""
        return "".join(m.visible for m in self.bot_replies(channel, thread_ts))

    def calls_to(self, *methods: str) -> list[Call]:
        return [c for c in self.calls if c.method in methods]

    def writes(self) -> list[Call]:
        """Calls that change what people see."""
        return self.calls_to(
            "chat.postMessage",
            "chat.update",
            "chat.startStream",
            "chat.appendStream",
            "chat.stopStream",
        )

    async def wait_for(self, predicate: Callable[[], Any], within: float = 5.0) -> Any:
        """Wait until `predicate()` is truthy, re-checking whenever the fake changes."""
        deadline = time.monotonic() + within
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"fake Slack never reached: {predicate}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))

    # ------------------------------------------------------------ event payloads
    def event_for(self, message: Message, *, kind: str = "message") -> dict[str, Any]:
        """The event Slack sends for a person's message: `message` or `app_mention`."""
        event: dict[str, Any] = {
            "type": kind,
            "user": message.user,
            "text": message.text,
            "ts": message.ts,
            "channel": message.channel,
            "event_ts": message.ts,
            "team": self.team_id,
        }
        if kind == "message":
            event["channel_type"] = channel_type(message.channel)
        if message.thread_ts:
            event["thread_ts"] = message.thread_ts
        if message.files:
            event["files"] = message.files
            if kind == "message":
                event["subtype"] = "file_share"
        return event

    def events_for(self, message: Message) -> list[dict[str, Any]]:
        """Every event Slack delivers for a message to an app subscribed to message.*."""
        events = [self.event_for(message)]
        if f"<@{self.bot_user_id}>" in message.text and channel_type(message.channel) != "im":
            events.insert(0, self.event_for(message, kind="app_mention"))
        return events

    def callback(
        self, event: dict[str, Any], *, event_id: str | None = None, install: Install | None = None
    ) -> dict[str, Any]:
        """The Events API body for `event`, from `install`'s workspace (default: the home one).
        An org-wide install's events come from one of the org's workspaces: `event["team"]`."""
        install = install or self.home
        return event_callback(
            event,
            team_id=install.team_id or str(event.get("team") or ""),
            bot_user_id=install.bot_user_id,
            app_id=self.app_id,
            event_id=event_id,
            enterprise_id=install.enterprise_id,
            is_enterprise_install=install.org_wide,
        )

    def mention_event(self, install: Install, message: Message, *, team: str = "") -> dict[str, Any]:
        event = self.event_for(message, kind="app_mention")
        event["team"] = install.team_id or team
        return event

    def replies_by(self, install: Install, channel: str, thread_ts: str) -> str:
        """What `install`'s bot shows in a thread."""
        mine = [m for m in self.thread(channel, thread_ts) if m.bot_id == install.bot_id]
        return "".join(m.visible for m in mine if m.ts != thread_ts)

    def command_payload(
        self, text: str, *, user: str, channel: str, command: str = "/persona"
    ) -> dict[str, str]:
        return slash_command(
            command=command,
            text=text,
            user_id=user,
            channel_id=channel,
            team_id=self.team_id,
            app_id=self.app_id,
            response_url=f"{self.base}/response/{new_id('cmd')}",
        )

    def shortcut_payload(self, callback_id: str, message: Message, *, user: str) -> dict[str, Any]:
        return message_shortcut(
            callback_id=callback_id,
            message=message.to_api(),
            channel_id=message.channel,
            user_id=user,
            team_id=self.team_id,
            response_url=f"{self.base}/response/{new_id('sc')}",
        )

    def action_payload(
        self, message: Message, action_id: str, *, user: str, value: str | None = None
    ) -> dict[str, Any]:
        """A press by `user` on the element `action_id` the message carries now (a feedback
        button: the one whose value is `value`). Fails if the message has no such element."""
        for block in message.blocks or []:
            for element in block.get("elements") or []:
                if element.get("action_id") != action_id:
                    continue
                action: dict[str, Any] = {
                    "action_id": action_id, "block_id": block.get("block_id", ""), "type": element["type"],
                }
                if element["type"] == "feedback_buttons":
                    buttons = (element["positive_button"], element["negative_button"])
                    chosen = [b for b in buttons if b["value"] == value]
                    if not chosen:
                        raise AssertionError(f"no feedback button with value {value!r}")
                    action["value"] = value
                else:
                    action["value"] = element.get("value", "")
                    action["text"] = element.get("text")
                return block_actions(
                    action=action,
                    message=message.to_api(),
                    channel_id=message.channel,
                    user_id=user,
                    team_id=self.team_id,
                    app_id=self.app_id,
                    response_url=f"{self.base}/response/{new_id('act')}",
                )
        raise AssertionError(f"message {message.ts} carries no {action_id!r} element")

    def submission_payload(
        self, view: dict[str, Any], *, user: str, values: dict[str, Any]
    ) -> dict[str, Any]:
        """`user` submits the modal `view` (as the app opened it) with `values`
        ({block_id: {action_id: {"type": …, "value": …}}})."""
        return view_submission(
            view=view, values=values, user_id=user, team_id=self.team_id, app_id=self.app_id
        )

    async def submit_view(self, view: dict[str, Any], *, user: str, values: dict[str, Any]) -> str:
        return await self.push("interactive", self.submission_payload(view, user=user, values=values))

    async def press(self, message: Message, action_id: str, *, user: str, value: str | None = None) -> str:
        """`user` presses a button of `message` (Socket Mode); returns the envelope id."""
        payload = self.action_payload(message, action_id, user=user, value=value)
        return await self.push("interactive", payload)

    # -------------------------------------------------------------- Socket Mode
    @property
    def connected(self) -> int:
        return sum(1 for ws in self._sockets if not ws.closed)

    async def push(
        self, kind: str, payload: dict[str, Any], *, accepts_response_payload: bool = False
    ) -> str:
        """Send one envelope to one connected Socket Mode client; return its envelope_id."""
        live = [ws for ws in self._sockets if not ws.closed]
        if not live:
            raise AssertionError("no Socket Mode client is connected to the fake Slack")
        ws = live[next(self._next_socket) % len(live)]
        envelope_id = new_id("env-")
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
            "retry_attempt": 0,
            "retry_reason": "",
        }
        self.envelopes.append(envelope)
        self.delivered_to[envelope_id] = self._socket_numbers[id(ws)]
        await ws.send_str(json.dumps(envelope))
        return envelope_id

    async def push_event(self, event: dict[str, Any], *, event_id: str | None = None) -> str:
        return await self.push("events_api", self.callback(event, event_id=event_id))

    async def push_command(self, text: str, *, user: str, channel: str, command: str = "/persona") -> str:
        payload = self.command_payload(text, user=user, channel=channel, command=command)
        return await self.push("slash_commands", payload, accepts_response_payload=True)

    async def push_shortcut(self, callback_id: str, message: Message, *, user: str) -> str:
        payload = self.shortcut_payload(callback_id, message, user=user)
        return await self.push("interactive", payload, accepts_response_payload=False)

    async def wait_ack(self, envelope_id: str, within: float = 5.0) -> Ack:
        ack: Ack = await self.wait_for(lambda: self.acks.get(envelope_id), within)
        return ack

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        if self.connected >= SOCKET_CONNECTIONS_PER_APP:
            await ws.send_json(
                {"type": "disconnect", "reason": "too_many_websockets", "debug_info": {"host": "fake-slack"}}
            )
            await ws.close()
            return ws
        self._sockets.append(ws)
        self._socket_numbers[id(ws)] = next(self._socket_count)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": self.connected,
                "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.app_id},
            }
        )
        self._notify()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                envelope_id = data.get("envelope_id")
                if envelope_id:
                    self.acks[envelope_id] = Ack(envelope_id, data.get("payload"), self.clock.monotonic())
                    self._notify()
        finally:
            self._sockets.remove(ws)
            self._notify()
        return ws

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.append(Response(request.match_info["key"], body, self.clock.monotonic()))
        self._notify()
        return web.Response(text="ok", content_type="text/plain")

    async def _download(self, request: web.Request) -> web.Response:
        """url_private: the file's bytes for the bot token; like Slack, a 200 sign-in page for a
        missing or wrong token (not a 401), and 404 once the file is deleted."""
        file_id = request.match_info["team_file"].split("-", 1)[-1]
        grant = self.oauth.tokens.get(bearer(request))
        authorized = grant is not None and grant.problem() is None  # any workspace's live bot token
        self.downloads.append((file_id, authorized))
        self.download_tokens.append(bearer(request))
        self._notify()
        file = self.files.get(file_id)
        if not authorized:
            return web.Response(text="<html><body>Sign in to Slack</body></html>", content_type="text/html")
        if file is None or file.deleted:
            return web.Response(status=404, text="not found")
        if file.redirect_to:
            raise web.HTTPFound(file.redirect_to)
        return web.Response(body=file.data, content_type=file.mimetype)

    # ------------------------------------------------------------------ Web API
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await read_params(request)
        token = bearer(request) or str(params.pop("token", "") or "")
        params.pop("token", None)
        call = Call(method, params, self.clock.monotonic(), token=token)
        self.calls.append(call)
        try:
            if method == "oauth.v2.access":  # the app's client id and secret, no token
                await asyncio.sleep(self.oauth.latency)  # Slack's time to answer, if the test asks for one
                self._injected_failure(method)
                try:
                    answer = self.oauth.access(params, basic_auth(request))
                except OAuthError as err:
                    raise SlackError(err.error) from None
                self._notify()
                return web.json_response({"ok": True, **answer})
            self._check_token(method, token)
            self._injected_failure(method)
            retry_after = self.limiter.check(method, str(params.get("channel", "")), self.clock.monotonic())
            if retry_after is not None:
                raise SlackError("ratelimited", 429, retry_after)
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                raise SlackError("unknown_method", 404)
            body: dict[str, Any] = {"ok": True, **handler(params)}
            status = 200
            headers: dict[str, str] = {}
        except SlackError as err:
            call.error, call.status = err.error, err.status
            body, status, headers = {"ok": False, "error": err.error}, err.status, {}
            if err.retry_after is not None:
                headers["Retry-After"] = str(err.retry_after)
        self._notify()
        return web.json_response(body, status=status, headers=headers)

    def _check_token(self, method: str, token: str) -> None:
        if not token:
            raise SlackError("not_authed")
        if method == "apps.connections.open":
            if token != self.app_token:
                raise SlackError("not_allowed_token_type" if token in self.oauth.tokens else "invalid_auth")
            return
        grant = self.oauth.tokens.get(token)
        if grant is None:
            raise SlackError("not_allowed_token_type" if token == self.app_token else "invalid_auth")
        problem = grant.problem()
        if problem:
            raise SlackError(problem)
        self._caller = grant.install

    def _injected_failure(self, method: str) -> None:
        queue = self._failures.get(method)
        if not queue:
            return
        failure = queue[0]
        if failure.after > 0:
            failure.after -= 1
            return
        if failure.times is not None:
            failure.times -= 1
            if failure.times <= 0:
                queue.pop(0)
        raise SlackError(failure.error, failure.status, failure.retry_after)

    def _notify(self) -> None:
        self._changed.set()

    # Each `_m_<method>` returns the fields of a successful answer or raises SlackError.
    def _m_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        me = self._caller
        user = self.users.get(me.bot_user_id)
        return {
            "url": "https://fake.slack.com/",
            "team": me.team_name,
            "user": user.name if user else "chatbot",
            "team_id": me.team_id or "",
            "user_id": me.bot_user_id,
            "bot_id": me.bot_id,
            "enterprise_id": me.enterprise_id,
            "is_enterprise_install": me.org_wide,
        }

    def _m_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        self.connections_opened += 1
        return {"url": f"ws://127.0.0.1:{self.port}/link/?ticket={new_id('t')}"}

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user", "")))
        if user is None:
            raise SlackError("user_not_found")
        return {"user": user.to_api()}

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = require(params, "channel")
        text, markdown, blocks = message_content(params)
        message = Message(
            ts=self._ts.next(),
            channel=channel,
            user=self._caller.bot_user_id,
            text=text,
            markdown_text=markdown,
            blocks=blocks,
            thread_ts=params.get("thread_ts") or None,
            bot_id=self._caller.bot_id,
        )
        self.messages.add(message)
        self._shown(message)
        self._echo(message.to_api() | {"channel": channel})
        return {"channel": channel, "ts": message.ts, "message": message.to_api()}

    def _m_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        require(params, "channel")
        require(params, "user")
        message_content(params)
        self.ephemeral.append(params)
        return {"message_ts": self._ts.next()}

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._own_message(params)
        text, markdown, blocks = message_content(params)
        message.text, message.markdown_text, message.blocks = text, markdown, blocks
        message.streaming = False
        message.edits += 1
        message.history.append(message.visible)
        self._shown(message)
        self._echo(
            {
                "type": "message",
                "subtype": "message_changed",
                "channel": message.channel,
                "hidden": True,
                "message": message.to_api(),
                "ts": self._ts.next(),
            }
        )
        return {"channel": message.channel, "ts": message.ts, "text": message.text}

    def _m_chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._own_message(params)
        self.messages.delete(message.channel, message.ts)
        self._shown(message, deleted=True)
        return {"channel": message.channel, "ts": message.ts}

    def _m_chat_startStream(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = require(params, "channel")
        thread_ts = require(params, "thread_ts")
        if channel_type(channel) != "im" and not (
            params.get("recipient_user_id") and params.get("recipient_team_id")
        ):
            raise SlackError("invalid_arguments")
        message = Message(
            ts=self._ts.next(),
            channel=channel,
            user=self._caller.bot_user_id,
            markdown_text="",
            thread_ts=thread_ts,
            bot_id=self._caller.bot_id,
            streaming=True,
            stream_started=self.clock.monotonic(),
        )
        self._append_stream(message, params)
        self.messages.add(message)
        self._shown(message)
        return {"channel": channel, "ts": message.ts}

    def _m_chat_appendStream(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._live_stream(params)
        self._append_stream(message, params)
        self._shown(message)
        return {"channel": message.channel, "ts": message.ts}

    def _m_chat_stopStream(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._live_stream(params)
        self._append_stream(message, params)
        message.streaming = False
        self._shown(message)
        return {"channel": message.channel, "ts": message.ts, "message": message.to_api()}

    def _m_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = require(params, "channel")
        ts = require(params, "ts")
        found = self.messages.thread(channel, ts)
        if not found:
            raise SlackError("thread_not_found")
        limit = int(params.get("limit") or 1000)
        start = int(params.get("cursor") or 0)
        page = found[start : start + limit]
        more = start + limit < len(found)
        return {
            "messages": [m.to_api() for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _m_conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        """The channel's top-level messages (thread parents with `reply_count`), newest first,
        within `oldest`..`latest`, a page of `limit` at a time."""
        channel = require(params, "channel")
        oldest, latest = float(params.get("oldest") or 0), float(params.get("latest") or "inf")
        every = self.messages.by_channel.get(channel, {}).values()
        top = sorted(
            (m for m in every if m.thread_ts in (None, m.ts) and oldest <= float(m.ts) <= latest),
            key=lambda m: float(m.ts), reverse=True,
        )
        limit = int(params.get("limit") or 100)
        start = int(params.get("cursor") or 0)
        page = top[start : start + limit]
        more = start + limit < len(top)
        return {
            "messages": [m.to_api() | self._thread_fields(channel, m) for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _thread_fields(self, channel: str, parent: Message) -> dict[str, Any]:
        """What conversations.history adds to a thread's parent."""
        replies = len(self.messages.thread(channel, parent.ts)) - 1
        return {"reply_count": replies, "thread_ts": parent.ts} if replies else {}

    def _m_chat_getPermalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = require(params, "channel"), require(params, "message_ts")
        if self.messages.get(channel, ts) is None:
            raise SlackError("message_not_found")
        return {"channel": channel, "permalink": permalink(channel, ts)}

    def _m_files_info(self, params: dict[str, Any]) -> dict[str, Any]:
        file = self.files.get(require(params, "file"))
        if file is None:
            raise SlackError("file_not_found")
        if file.deleted:
            raise SlackError("file_deleted")
        return {"file": file.to_api()}

    def _m_reactions_add(self, params: dict[str, Any]) -> dict[str, Any]:
        names = self.reactions.setdefault(reaction_key(params), set())
        name = require(params, "name")
        if name in names:
            raise SlackError("already_reacted")
        names.add(name)
        return {}

    def _m_reactions_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        names = self.reactions.setdefault(reaction_key(params), set())
        name = require(params, "name")
        if name not in names:
            raise SlackError("no_reaction")
        names.discard(name)
        return {}

    def _m_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        require(params, "trigger_id")
        view = params.get("view")
        if not isinstance(view, dict) or view.get("type") != "modal" or not view.get("blocks"):
            raise SlackError("invalid_arguments")
        opened = {**view, "id": new_id("V")}
        self.views.append(opened)
        return {"view": opened}

    def _m_assistant_threads_setSuggestedPrompts(self, params: dict[str, Any]) -> dict[str, Any]:
        key = (require(params, "channel_id"), require(params, "thread_ts"))
        prompts = params.get("prompts")
        if not isinstance(prompts, list) or not prompts or len(prompts) > 4:
            raise SlackError("invalid_arguments")
        if any(not (isinstance(p, dict) and p.get("title") and p.get("message")) for p in prompts):
            raise SlackError("invalid_arguments")
        self.suggested[key] = prompts
        return {}

    def _m_assistant_threads_setTitle(self, params: dict[str, Any]) -> dict[str, Any]:
        self.titles[(require(params, "channel_id"), require(params, "thread_ts"))] = require(params, "title")
        return {}

    def _m_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = require(params, "channel")
        info = self.channel_info.get(channel)
        if info is None:
            raise SlackError("channel_not_found")
        return {"channel": {"id": channel, **info}}

    def _m_assistant_threads_setStatus(self, params: dict[str, Any]) -> dict[str, Any]:
        self.statuses.append(
            Status(
                require(params, "channel_id"),
                require(params, "thread_ts"),
                str(params.get("status", "")),
                self.clock.monotonic(),
            )
        )
        return {}

    # ----------------------------------------------------------------- helpers
    def _shown(self, message: Message, *, deleted: bool = False) -> None:
        """Note what one of the bot's messages shows now ("" once deleted)."""
        timeline = self.timelines.setdefault(
            (message.channel, message.ts), Timeline(message.channel, message.ts)
        )
        live = message.streaming and not deleted
        timeline.record("" if deleted else message.visible, live=live, at=self.clock.monotonic())

    def _own_message(self, params: dict[str, Any]) -> Message:
        message = self.messages.get(require(params, "channel"), require(params, "ts"))
        if message is None:
            raise SlackError("message_not_found")
        if message.bot_id != self._caller.bot_id:
            raise SlackError("cant_update_message")
        return message

    def _live_stream(self, params: dict[str, Any]) -> Message:
        message = self._own_message(params)
        if message.streaming and self.clock.monotonic() - message.stream_started > self.stream_ttl:
            message.streaming = False
        if not message.streaming:
            raise SlackError("message_not_in_streaming_state")
        return message

    def _append_stream(self, message: Message, params: dict[str, Any]) -> None:
        added = str(params.get("markdown_text") or "")
        for chunk in params.get("chunks") or []:
            kind = chunk.get("type")
            if kind == "markdown_text":
                added += str(chunk.get("text", ""))
            elif kind == "task_update":
                task_id, status = require(chunk, "id"), require(chunk, "status")
                if status not in TASK_STATUSES or not chunk.get("title"):
                    raise SlackError("invalid_chunks")
                message.tasks[task_id] = {**message.tasks.get(task_id, {}), **chunk}
                message.task_log.append((task_id, status))
            elif kind == "plan_update":
                message.plans.append(require(chunk, "title"))
            elif kind != "blocks":
                raise SlackError("invalid_chunks")
        if len(added) > MARKDOWN_LIMIT:
            raise SlackError("msg_too_long")
        if added:
            message.markdown_text = (message.markdown_text or "") + added
            message.history.append(message.markdown_text)

    def _echo(self, event: dict[str, Any]) -> None:
        """Deliver the bot's own post/edit back to the app, as Slack does."""
        if not self.echo_bot_messages:
            return
        event.setdefault("channel_type", channel_type(str(event.get("channel", ""))))
        body = self.callback(event)

        async def send() -> None:
            if self.http_sender is not None:
                await self.http_sender.send_event(body)
            elif self.connected:
                await self.push("events_api", body)

        task = asyncio.create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def permalink(channel: str, ts: str) -> str:
    return f"https://fake.slack.com/archives/{channel}/p{ts.replace('.', '')}"


def channel_type(channel: str) -> str:
    """Slack's channel id prefixes: D = DM, G = private, C = public."""
    return {"D": "im", "G": "group"}.get(channel[:1], "channel")


def require(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not value:
        raise SlackError("invalid_arguments")
    return str(value)


def reaction_key(params: dict[str, Any]) -> tuple[str, str]:
    return require(params, "channel"), require(params, "timestamp")


def message_content(
    params: dict[str, Any],
) -> tuple[str, str | None, list[dict[str, Any]] | None]:
    """Validate text / markdown_text / blocks the way Slack does."""
    text = str(params.get("text") or "")
    markdown = params.get("markdown_text")
    blocks = params.get("blocks")
    if markdown is not None and (text or blocks):
        # Slack: markdown_text "should not be used in conjunction with blocks or text".
        raise SlackError("invalid_arguments")
    if not text and not markdown and not blocks:
        raise SlackError("no_text")
    if len(text) > TEXT_LIMIT:
        raise SlackError("msg_too_long")
    if markdown is not None and len(str(markdown)) > MARKDOWN_LIMIT:
        raise SlackError("msg_too_long")
    if blocks:
        markdown_chars = sum(len(str(b.get("text", ""))) for b in blocks if b.get("type") == "markdown")
        if markdown_chars > MARKDOWN_LIMIT:
            raise SlackError("msg_too_long")
    return text, (str(markdown) if markdown is not None else None), blocks


def basic_auth(request: web.Request) -> tuple[str, str] | None:
    """The client id and secret slack_sdk sends oauth.v2.access as HTTP Basic auth."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    user, _, password = base64.b64decode(header[len("Basic ") :]).decode().partition(":")
    return user, password


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header[len("Bearer ") :] if header.startswith("Bearer ") else ""


async def read_params(request: web.Request) -> dict[str, Any]:
    """Query string, form or JSON body, with JSON-valued form fields decoded."""
    params: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
        else:
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    for name in JSON_FIELDS:
        if isinstance(params.get(name), str):
            with contextlib.suppress(ValueError):
                params[name] = json.loads(params[name])
    return params
