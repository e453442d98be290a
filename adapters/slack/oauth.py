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

import logging
from collections import OrderedDict
from dataclasses import dataclass

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.installations import STATE_TTL, RedisInstallationStore, SignedStateStore
from adapters.slack.scopes import bot_scopes
from bot.config import ConfigError, SlackSettings
from bot.contract import Installs

log = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
# Slack's rotating tokens live 12 hours; one is refreshed when it has less than this left
# (bolt's default), so no call made with it meets its expiry.
ROTATE_MINUTES = 120
# Authorizations kept per token, so an event costs no auth.test once its workspace was seen.
MOST_CACHED = 2_000


class BoundedCache(OrderedDict[str, AuthorizeResult]):
    """bolt's authorize cache, which would otherwise keep every token ever rotated."""

    def __setitem__(self, key: str, value: AuthorizeResult) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > MOST_CACHED:
            self.popitem(last=False)


@dataclass
class MultiWorkspace:
    store: RedisInstallationStore
    settings: AsyncOAuthSettings
    authorize: AsyncInstallationStoreAuthorize


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
        logger=log,
    )
    authorize = AsyncInstallationStoreAuthorize(
        logger=log,
        installation_store=store,
        client_id=slack.client_id,
        client_secret=slack.client_secret,
        token_rotation_expiration_minutes=ROTATE_MINUTES,
        cache_enabled=True,
        client=web,  # refreshes go to SLACK_API_URL too
    )
    authorize.authorize_result_cache = BoundedCache()
    return MultiWorkspace(store, settings, authorize)
