"""Multi-workspace mode: slack-bolt's OAuth install flow over the bot's Redis (docs/slack.md,
"Distribute the app").

`GET /slack/install` shows the "Add to Slack" page (its link carries a signed, single-use
state, also set as a cookie); Slack sends the installer back to `GET /slack/oauth_redirect`
with a code, which bolt exchanges (`oauth.v2.access`) for the workspace's bot token and
saves (adapters/slack/installations.py). Each event is then authorized from its workspace's
installation, and a token that expires within `ROTATE_MINUTES` is refreshed first
(`oauth.v2.access` with `grant_type=refresh_token`, when the app has token rotation on).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.oauth.async_callback_options import AsyncCallbackOptions
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.installation_store import Installation
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.install_pages import SafeOAuthFlow, on_failure, on_success
from adapters.slack.installations import STATE_TTL, RedisInstallationStore, SignedStateStore, record_name
from adapters.slack.scopes import bot_scopes
from bot.config import ConfigError, SlackSettings
from bot.contract import Installs
from bot.lru import Lru

log = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
# Slack's rotating tokens live 12 hours; one is refreshed when it has less than this left
# (bolt's default), so no call made with it meets its expiry.
ROTATE_MINUTES = 120
# Authorizations kept per token, so an event costs no auth.test once its workspace was seen.
MOST_CACHED = 2_000
# Another replica refreshed the token first (Slack revokes a refresh token once used): the new
# token is in Redis a moment later. Well within the 3 s Slack gives an event to be acknowledged.
LOST_REFRESH_RETRY = 0.5
# Events of a workspace with no installation (uninstalled, or its install did not complete) are
# ignored; that is logged once per workspace in this many seconds, not once per event.
UNKNOWN_LOG_EVERY = 3600.0
# bolt's own line for each such event, dropped in favour of the one above.
BOLT_NOT_FOUND = (
    "Although the app should be installed into this workspace, "
    "the AuthorizeResult (returned value from authorize) for it was not found."
)


class _DropBoltNotFound(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != BOLT_NOT_FOUND


logging.getLogger("slack_bolt.AsyncMultiTeamsAuthorization").addFilter(_DropBoltNotFound())


class RotatingAuthorize(AsyncInstallationStoreAuthorize):
    """bolt's authorize from the installations, safe when events of one workspace arrive together
    while its token is about to expire. Slack revokes a refresh token once it is used, so of two
    refreshes at once the second fails and bolt would drop its event. In this process a
    workspace's events are authorized one at a time (the second reads the token the first
    stored); across replicas, a failed authorize of an installation that rotates is tried once
    more, after the replica that won has stored the new token."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._unknown: Lru[str, float] = Lru(MOST_CACHED)  # workspace -> when last logged

    async def __call__(
        self, *, context: AsyncBoltContext, enterprise_id: str | None, team_id: str | None,
        user_id: str | None, **actors: str | None,
    ) -> AuthorizeResult | None:
        ask = functools.partial(
            super().__call__, context=context, enterprise_id=enterprise_id, team_id=team_id,
            user_id=user_id, **actors,
        )
        async with self._one_at_a_time(self._key(enterprise_id, team_id, context.is_enterprise_install)):
            found = await ask()
            if found is None and await self._rotates(context, enterprise_id, team_id):
                await asyncio.sleep(LOST_REFRESH_RETRY)
                found = await ask()
        if found is None:
            self._no_installation(record_name(enterprise_id, team_id, context.is_enterprise_install))
        return found

    def _no_installation(self, workspace: str) -> None:
        now = time.monotonic()
        last = self._unknown.get(workspace)
        if last is not None and now - last < UNKNOWN_LOG_EVERY:
            return
        self._unknown[workspace] = now
        log.warning("events from Slack workspace %s are ignored: it has no installation (uninstalled, "
                    "or its install did not complete); logged once an hour", workspace)

    async def fresh_installation(self, team_id: str) -> Installation | None:
        """A workspace's installation with a token good for a while: refreshed first if it is
        about to expire, under the same per-workspace turn as authorizing its events (and, if
        another replica used the refresh token first, read again once it stored the new one)."""
        find = functools.partial(
            self.installation_store.async_find_installation, enterprise_id=None, team_id=team_id
        )
        async with self._one_at_a_time(self._key(None, team_id, False)):
            found = await find()
            if found is None or self.token_rotator is None or not found.bot_refresh_token:
                return found
            try:
                rotated = await self.token_rotator.perform_token_rotation(
                    installation=found, minutes_before_expiration=ROTATE_MINUTES
                )
            except SlackApiError:
                await asyncio.sleep(LOST_REFRESH_RETRY)
                return await find()
            if rotated is None:
                return found
            await self.installation_store.async_save(rotated)
            return rotated

    @staticmethod
    def _key(enterprise_id: str | None, team_id: str | None, enterprise_install: bool | None) -> str:
        return f"{enterprise_id}:{team_id}:{enterprise_install}"

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]  # kept only while in use
            else:
                self._locks[key] = (lock, users - 1)

    async def _rotates(
        self, context: AsyncBoltContext, enterprise_id: str | None, team_id: str | None
    ) -> bool:
        found = await self.installation_store.async_find_installation(
            enterprise_id=enterprise_id, team_id=team_id, is_enterprise_install=context.is_enterprise_install,
        )
        return found is not None and found.bot_refresh_token is not None


@dataclass
class MultiWorkspace:
    store: RedisInstallationStore
    settings: AsyncOAuthSettings
    authorize: RotatingAuthorize
    flow: SafeOAuthFlow


def multi_workspace(slack: SlackSettings, installs: Installs, web: AsyncWebClient) -> MultiWorkspace:
    """The stores, the OAuth settings and the authorize of multi-workspace mode; `web` (the
    app's client, at SLACK_API_URL) makes the code exchange, the refreshes and auth.test."""
    if not slack.client_id or not slack.client_secret or not slack.state_secret:
        raise ConfigError("multi-workspace mode needs SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and "
                          "SLACK_STATE_SECRET.")
    store = RedisInstallationStore(installs.records)
    states = SignedStateStore(installs.states, slack.state_secret)
    settings = AsyncOAuthSettings(
        client_id=slack.client_id,
        client_secret=slack.client_secret,
        scopes=bot_scopes(),
        user_scopes=[],
        install_path=INSTALL_PATH,
        redirect_uri_path=REDIRECT_PATH,
        installation_store=store,
        state_store=states,
        state_expiration_seconds=STATE_TTL,
        token_rotation_expiration_minutes=ROTATE_MINUTES,
        callback_options=AsyncCallbackOptions(success=on_success, failure=on_failure),
        logger=log,
    )
    authorize = RotatingAuthorize(
        logger=log,
        installation_store=store,
        client_id=slack.client_id,
        client_secret=slack.client_secret,
        token_rotation_expiration_minutes=ROTATE_MINUTES,
        cache_enabled=True,
        client=web,  # refreshes go to SLACK_API_URL too
    )
    authorize.authorize_result_cache = Lru(MOST_CACHED)  # bolt's would keep every rotated token
    return MultiWorkspace(store, settings, authorize, SafeOAuthFlow(settings=settings))
