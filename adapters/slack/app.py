"""The Slack adapter: slack-bolt's async app, over Socket Mode or the HTTP Events API.

    adapter = SlackAdapter(settings, engine)
    health.mount(adapter.web_app)   # HTTP mode only: one port for Slack and the probes
    await adapter.start()
    ...
    await adapter.stop()

One workspace (SLACK_BOT_TOKEN), or many (SLACK_CLIENT_ID: each installs the app through
OAuth, adapters/slack/oauth.py, and its events are answered with its own token,
adapters/slack/workspaces.py). Every event and command is acknowledged first (Slack
redelivers after 3 s); the answer runs afterwards in the engine. `SLACK_API_URL` is the base of every Web API
call, `apps.connections.open` included.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.slack.assistant import AssistantThreads
from adapters.slack.commands import FORGET_SHORTCUT, Commands, markdown_reply
from adapters.slack.controls import APPROVE_ACTION, DENY_ACTION, FEEDBACK_ACTION, STOP_ACTION
from adapters.slack.files import SlackFiles
from adapters.slack.intake import Intake
from adapters.slack.mentions import MentionSafeSurface
from adapters.slack.oauth import INSTALL_PATH, REDIRECT_PATH, MultiWorkspace, multi_workspace
from adapters.slack.people import People
from adapters.slack.presses import REASON_VIEW, Actions
from adapters.slack.streaming import NativeStreamSurface
from adapters.slack.summaries import SHORTCUT as SUMMARIZE_SHORTCUT
from adapters.slack.summaries import SlackReader, SlackSummaries
from adapters.slack.surface import Place, SlackSurface, StatusSupport, surface_limits
from adapters.slack.threads import Identity, ThreadReader
from adapters.slack.workspaces import Workspace, Workspaces
from bot.config import ConfigError, Settings, SlackSettings
from bot.contract import Adapter, ConversationKey, Core, Installs, ReplySurface

log = logging.getLogger(__name__)

Json = dict[str, Any]
Context = AsyncBoltContext

DEFAULT_API_URL = "https://slack.com/api/"
EVENTS_PATH = "/slack/events"
# HTTP mode: Slack's event and command payloads are a few KB (a 40,000-character message
# with its blocks stays well under 1 MiB); anything bigger is refused with 413 unread.
MAX_BODY_BYTES = 1 << 20
# How long aiohttp goes on reading (and dropping) a body left unread, a refused one's, before it
# closes the connection; stopping the adapter waits for that. aiohttp's default; tests set it small.
LINGER = 10.0
MAX_TIMESTAMP_CHARS = 12


def api_base(url: str | None) -> str:
    base = url or DEFAULT_API_URL
    return base if base.endswith("/") else base + "/"


class MalformedHttp(logging.Filter):
    """aiohttp logs a request it cannot parse (a header line over 8 KB, a bad Content-Length,
    garbage for a method) with a traceback that quotes the bytes. From anyone on the network
    that is noise and a way to write into the log: keep the reason only, at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "refused a malformed HTTP request: %s (status %s)", (
                type(exc).__name__, exc.code,
            )
            record.exc_info, record.exc_text = None, None
            record.levelno = min(record.levelno, logging.INFO)
            record.levelname = logging.getLevelName(record.levelno)
        return True


HTTP_LOG = logging.getLogger("adapters.slack.http")
HTTP_LOG.addFilter(MalformedHttp())


class DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.text


class SlackAdapter(Adapter):
    name = "slack"
    reaches_earlier_messages = True

    def __init__(self, settings: Settings, engine: Core, installs: Installs | None = None) -> None:
        """`installs`: where multi-workspace mode keeps the installations (the app layer's
        `adapters.slack.installations.slack_installs`, over the bot's Redis)."""
        self.settings = settings
        self.slack: SlackSettings = settings.slack
        self.engine = engine
        self._installs = installs
        self._base_url = api_base(self.slack.api_url)
        self.client = AsyncWebClient(token=self.slack.bot_token, base_url=self._base_url)
        # Bolt gets a client without a token: it takes the token from `authorize` (and
        # Socket Mode passes the app token itself), so nothing is configured twice.
        self._bolt_client = AsyncWebClient(base_url=self._base_url)
        self.status = StatusSupport()
        self.workspaces = Workspaces(self._build_workspace, self._new_client)
        self.web_app = None
        self._verifier: SignatureVerifier | None = None
        if self.slack.mode == "http":
            self.web_app = web.Application(client_max_size=MAX_BODY_BYTES)
            self.web_app.router.add_post(EVENTS_PATH, self._http_request)
            if self.slack.multi_workspace:
                self.web_app.router.add_get(INSTALL_PATH, self._oauth_request)
                self.web_app.router.add_get(REDIRECT_PATH, self._oauth_request)
            self._verifier = SignatureVerifier(self.slack.signing_secret or "")
        self.port: int | None = None  # HTTP mode: the port actually bound
        self.me: Identity | None = None  # one workspace: the bot (multi-workspace: per workspace)
        self.multi: MultiWorkspace | None = None
        self._single: Workspace | None = None
        self._app: AsyncApp | None = None
        self._auth: AsyncSlackResponse | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._intake_open = True

    # -- lifecycle -----------------------------------------------------------------

    @property
    def taking_events(self) -> bool:
        return self._intake_open and self.engine.accepting

    @property
    def connected(self) -> bool:
        if self.slack.mode == "http":
            return self._runner is not None and self._app is not None
        session = self._socket.client.current_session if self._socket else None
        return session is not None and not session.closed

    async def start(self) -> None:
        # One connection pool for every Web API call (slack_sdk opens one per call otherwise).
        self._session = aiohttp.ClientSession()
        self.client.session = self._bolt_client.session = self._session
        if self.slack.multi_workspace:
            if self._installs is None:
                raise ConfigError("multi-workspace mode keeps installations in Redis: set REDIS_URL.")
            self.multi = multi_workspace(self.slack, self._installs, self._bolt_client)
        else:
            self._auth = await self.client.auth_test()
            self.me = Identity(str(self._auth["user_id"]), str(self._auth.get("bot_id") or ""))
            self._single = self._build_workspace(self.client, self.me)
        self._app = self._build_app()
        if self.slack.mode == "http":
            await self._serve_http()
        else:
            await self._connect_socket()
        if self._auth is not None:
            log.info("slack connected (%s mode) as %s", self.slack.mode, self._auth.get("user"))
        else:
            log.info("slack serving many workspaces (HTTP mode, installs at %s)", INSTALL_PATH)

    # -- workspaces ----------------------------------------------------------------

    def _new_client(self, token: str) -> AsyncWebClient:
        return AsyncWebClient(token=token, base_url=self._base_url, session=self._session)

    def _build_workspace(self, client: AsyncWebClient, me: Identity) -> Workspace:
        people = People(client)
        commands = Commands(self.engine, client, people, self.settings.persona_admins)
        files = SlackFiles(client)
        threads = ThreadReader(client, people, me, files)

        def make_surface(place: Place, allowed_users: frozenset[str] = frozenset()) -> ReplySurface:
            return self.make_surface(place, allowed_users, client)

        actions = Actions(self.engine, client, commands.can_admin)
        assistant = AssistantThreads(self.engine, client)
        intake = Intake(
            self.engine, me, people, threads, make_surface, commands.forget_by_mention, files,
            thread_context=assistant.prepare,
        )
        summaries = SlackSummaries(self.engine, SlackReader(client, self.engine, people, me), make_surface)
        return Workspace(client, me, intake, commands, actions, assistant, summaries)

    def workspace(self, context: AsyncBoltContext) -> Workspace:
        """The workspace an authorized request comes from (its installation's token)."""
        if self._single is not None:
            return self._single
        key = str((context.enterprise_id if context.is_enterprise_install else context.team_id) or "")
        me = Identity(str(context.bot_user_id or ""), str(context.bot_id or ""))
        return self.workspaces.get(key, str(context.bot_token or ""), me)

    async def _stored_workspace(self, team: str) -> Workspace | None:
        """A workspace not seen since this process started, from its installation (refreshed
        first if its token is about to expire)."""
        assert self.multi is not None
        found = await self.multi.authorize.fresh_installation(team)
        if found is None or not found.bot_token:
            return None
        me = Identity(found.bot_user_id or "", found.bot_id or "")
        return self.workspaces.get(team, found.bot_token, me)

    async def stop_intake(self) -> None:
        """Shutting down: take no new events; answers in flight keep writing."""
        self._intake_open = False
        await self._close_socket()

    async def stop(self) -> None:
        await self._close_socket()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _close_socket(self) -> None:
        if self._socket is None:
            return
        # Stop slack_sdk's reader first: closing the websocket while it still reads
        # makes the close wait for its 10 s timeout.
        client = self._socket.client
        for task in (client.message_receiver, client.current_session_monitor):
            if task is not None:
                task.cancel()
        await self._socket.close_async()  # type: ignore[no-untyped-call]
        self._socket = None

    async def _connect_socket(self) -> None:
        assert self._app is not None
        self._socket = AsyncSocketModeHandler(self._app, app_token=self.slack.app_token)
        # Ask for the websocket URL ourselves: a bad app token then fails start() with
        # Slack's error instead of slack_sdk retrying it forever in the background.
        opened = await self.client.apps_connections_open(app_token=self.slack.app_token or "")
        self._socket.client.wss_uri = opened["url"]
        await self._socket.connect_async()  # type: ignore[no-untyped-call]

    async def _serve_http(self) -> None:
        assert self.web_app is not None
        self._runner = web.AppRunner(self.web_app, access_log=None, logger=HTTP_LOG, lingering_time=LINGER)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.slack.host, self.slack.port).start()
        self.port = int(self._runner.addresses[0][1])

    async def _oauth_request(self, request: web.Request) -> web.Response:
        """GET /slack/install and /slack/oauth_redirect: bolt's OAuth flow (adapters/slack/oauth.py)."""
        flow = self._app.oauth_flow if self._app is not None else None
        if flow is None:
            return web.Response(status=503, text="starting")
        bolt_request = await to_bolt_request(request)
        if request.path == INSTALL_PATH:
            response = await flow.handle_installation(bolt_request)
        else:
            response = await flow.handle_callback(bolt_request)
        return await to_aiohttp_response(response)

    async def _http_request(self, request: web.Request) -> web.Response:
        """POST /slack/events. Anything malformed gets a 4xx before bolt sees it, and the log
        gets the reason and the size only: nothing of an unauthenticated request is trusted,
        kept or logged."""
        if self._app is None:
            return web.Response(status=503, text="starting")
        size = request.content_length
        if size is not None and size > MAX_BODY_BYTES:
            return _refused(413, "body over the size limit", size)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _refused(413, "body over the size limit", size or MAX_BODY_BYTES)
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= MAX_TIMESTAMP_CHARS):
            return _refused(400, "missing or malformed timestamp header", len(raw))
        assert self._verifier is not None
        if not self._verifier.is_valid(raw, timestamp, signature):
            return _refused(401, "bad signature or stale timestamp", len(raw))
        try:
            raw.decode("utf-8")
            bolt_request = await to_bolt_request(request)
        except ValueError:  # not UTF-8, or a body bolt cannot parse
            return _refused(400, "malformed body", len(raw))
        response = await self._app.async_dispatch(bolt_request)
        return await to_aiohttp_response(response)

    # -- the bolt app --------------------------------------------------------------

    def _authorization(self) -> dict[str, Any]:
        """bolt's authorize: from each workspace's installation, or the one bot token."""
        if self.multi is not None:
            multi = self.multi
            return {"authorize": multi.authorize, "installation_store": multi.store,
                    "oauth_flow": multi.flow}
        auth, bot_token = self._auth, self.slack.bot_token
        assert auth is not None

        async def authorize() -> AuthorizeResult:
            # One workspace, one bot token: reuse start()'s auth.test instead of bolt's own.
            return AuthorizeResult.from_auth_test_response(auth_test_response=auth, bot_token=bot_token)

        return {"authorize": authorize}

    def _build_app(self) -> AsyncApp:

        # Bolt reads SLACK_BOT_TOKEN from the environment and warns that the client
        # given wins over it: true and intended here, so that one warning is dropped.
        bolt_log = logging.getLogger("slack_bolt.AsyncApp")
        quiet = DropMessage(warning_client_prioritized_and_token_skipped())
        bolt_log.addFilter(quiet)
        try:
            app = AsyncApp(
                name="chatbot",  # else bolt inspects the call stack for one (slow)
                client=self._bolt_client,
                signing_secret=self.slack.signing_secret or "",
                # HTTP mode: `_http_request` has checked the signature before bolt sees a request.
                request_verification_enabled=False,
                process_before_response=False,
                **self._authorization(),
            )
        finally:
            bolt_log.removeFilter(quiet)
        workspace = self.workspace

        @app.middleware
        async def gate(body: dict[str, Any], next: Callable[[], Awaitable[BoltResponse]]) -> Any:
            # Shutting down: leave events unacknowledged (Socket Mode) or answer 503
            # (HTTP), so Slack delivers them again, to another connection or replica.
            if body.get("type") == "event_callback" and not self.taking_events:
                return BoltResponse(status=503, body="shutting down")
            return await next()

        @app.event("app_mention")
        async def on_mention(ack: Any, event: Json, body: Json, context: Context) -> None:
            await ack()
            await workspace(context).intake.on_mention(event, str(body.get("team_id") or ""))

        @app.event("message")
        async def on_message(ack: Any, event: Json, body: Json, context: Context) -> None:
            await ack()
            await workspace(context).intake.on_message(event, str(body.get("team_id") or ""))

        @app.event("assistant_thread_started")
        async def on_assistant_thread(ack: Any, event: Json, body: Json, context: Context) -> None:
            await ack()
            await workspace(context).assistant.started(event, str(body.get("team_id") or ""))

        @app.event("assistant_thread_context_changed")
        async def on_assistant_context(ack: Any, event: Json, body: Json, context: Context) -> None:
            await ack()
            await workspace(context).assistant.context_changed(event, str(body.get("team_id") or ""))

        @app.command("/persona")
        async def on_persona(ack: Any, command: Json, respond: Any, context: Context) -> None:
            await ack()
            reply = await workspace(context).commands.persona(command)
            await respond(response_type="ephemeral", **markdown_reply(reply))

        @app.shortcut(FORGET_SHORTCUT)
        async def on_forget(ack: Any, shortcut: Json, respond: Any, context: Context) -> None:
            await ack()
            reply = await workspace(context).commands.forget_shortcut(shortcut)
            await respond(response_type="ephemeral", **markdown_reply(reply))

        @app.shortcut(SUMMARIZE_SHORTCUT)
        async def on_summarize_thread(ack: Any, shortcut: Json, respond: Any, context: Context) -> None:
            await ack()
            await workspace(context).summaries.shortcut(shortcut, respond)

        @app.command("/summarize")
        async def on_summarize(ack: Any, command: Json, respond: Any, context: Context) -> None:
            await ack()
            await workspace(context).summaries.command(command, respond)

        @app.action(STOP_ACTION)
        async def on_stop(ack: Any, body: Json, respond: Any, context: Context) -> None:
            await ack()
            await workspace(context).actions.stop(body, respond)

        @app.action(APPROVE_ACTION)
        async def on_approve(ack: Any, body: Json, respond: Any, context: Context) -> None:
            await ack()
            await workspace(context).actions.approval(body, respond, approved=True)

        @app.action(DENY_ACTION)
        async def on_deny(ack: Any, body: Json, respond: Any, context: Context) -> None:
            await ack()
            await workspace(context).actions.approval(body, respond, approved=False)

        @app.action(FEEDBACK_ACTION)
        async def on_feedback(ack: Any, body: Json, respond: Any, context: Context) -> None:
            await ack()
            await workspace(context).actions.feedback(body, respond)

        @app.view(REASON_VIEW)
        async def on_reason(ack: Any, body: Json, context: Context) -> None:
            await ack()  # closes the modal
            await workspace(context).actions.reason(body)

        @app.event("app_uninstalled")
        async def on_uninstalled(ack: Any, context: AsyncBoltContext) -> None:
            await ack()
            await self._forget_installation(context)

        @app.event("tokens_revoked")
        async def on_revoked(ack: Any, event: Json, context: Context) -> None:
            await ack()
            if (event.get("tokens") or {}).get("bot"):  # a user token alone: the bot is not ours
                await self._forget_installation(context)

        return app

    async def _forget_installation(self, context: AsyncBoltContext) -> None:
        """Uninstalled or revoked: that workspace's installation and tokens go at once (its
        personas and histories follow their TTLs, or `python -m bot forget-workspace`)."""
        if self.multi is None:
            log.warning("slack: the app was uninstalled or its token revoked: SLACK_BOT_TOKEN is void")
            return
        enterprise, team = context.enterprise_id, context.team_id
        await self.multi.store.forget(enterprise, team, bool(context.is_enterprise_install))
        self.workspaces.drop(str((enterprise if context.is_enterprise_install else team) or ""))

    # -- reply surfaces ------------------------------------------------------------

    async def surface_for(self, conversation: ConversationKey, message_id: str) -> ReplySurface | None:
        """A surface for a message posted before a restart (the core marks cut answers)."""
        if conversation.platform != self.name:
            return None
        if self.multi is not None:
            found = self.workspaces.find(conversation.workspace) or await self._stored_workspace(
                conversation.workspace
            )
            if found is None:
                return None  # uninstalled since (or an org-wide install, keyed by its enterprise)
            client = found.client
        elif self._auth is None or conversation.workspace != self._auth.get("team_id"):
            return None  # another installation's workspace: this token cannot edit there
        else:
            client = self.client
        place = Place(
            team_id=conversation.workspace,
            channel=conversation.channel,
            thread_ts=conversation.thread,
            user_id="",
            message_ts=message_id,
        )
        # Always post-and-update: a stream cannot be resumed, chat.update edits any message.
        limits = surface_limits(place, native=False, parts=self.slack.progress == "parts")
        return MentionSafeSurface(SlackSurface(client, place, limits, self.status))

    def make_surface(
        self, place: Place, allowed_users: frozenset[str] = frozenset(), client: AsyncWebClient | None = None
    ) -> ReplySurface:
        """The answer's surface (written with `client`, the workspace's; default the one token's);
        no write on it can ping anyone but `allowed_users` (see `mentions`)."""
        client = client or self.client
        native = self.slack.streaming == "native"
        limits = surface_limits(place, native, parts=self.slack.progress == "parts")
        surface: ReplySurface
        if native:
            surface = NativeStreamSurface(client, place, limits, self.status)
        else:
            surface = SlackSurface(client, place, limits, self.status)
        return MentionSafeSurface(surface, allowed_users)


def _refused(status: int, reason: str, size: int) -> web.Response:
    log.info("refused a Slack HTTP request: %s (%d bytes)", reason, size)
    return web.Response(status=status, text=reason)
