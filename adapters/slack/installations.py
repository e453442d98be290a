"""Where each workspace's installation lives in multi-workspace mode: Redis, encrypted.

slack_sdk ships installation stores for SQL, S3 and files, not Redis; this one maps
its `Installation` onto `bot.state.installations.SealedRecords` (one record per
workspace, or per organization for an Enterprise Grid org-wide install, the token
inside encrypted with SLACK_TOKEN_ENCRYPTION_KEY). The bot asks for bot scopes only,
so a record is the workspace's latest installation; deleting the bot deletes it.
The records and states come from the app layer (`bot.contract.Installs`).

The OAuth state store issues signed, single-use states: HMAC(SLACK_STATE_SECRET) over
a random nonce, so a forged state is refused without a Redis lookup, and the nonce is
kept in Redis for `STATE_TTL` seconds and deleted when used (GETDEL).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
from datetime import datetime
from typing import Any

from slack_bolt.error import BoltError
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

from bot.contract import InstallRecords, OneTimeStates, Unreadable

log = logging.getLogger(__name__)

PLATFORM = "slack"
NONE = "-"  # the part of a name that is absent (no enterprise; an org-wide install's team)
STATE_TTL = 600  # seconds: bolt's default, time enough to read Slack's consent page
TIMESTAMPS = {"bot_token_expires_at": int, "user_token_expires_at": int, "installed_at": float}
# Storing an installation is tried this many times, the waits doubling: the token exists only
# in this request until it is stored (Redis failing over, a blip), and the installer waits.
SAVE_ATTEMPTS = 3
SAVE_FIRST_WAIT = 0.25


def record_name(enterprise_id: str | None, team_id: str | None, org_wide: bool | None = False) -> str:
    """"E…:T…" for a workspace (E part "-" outside Enterprise Grid), "E…:-" for an org-wide install."""
    team = NONE if org_wide else (team_id or NONE)
    return f"{enterprise_id or NONE}:{team}"


def encode(installation: Installation) -> str:
    values = installation.to_dict_for_copying()
    for name, kind in TIMESTAMPS.items():
        if isinstance(values.get(name), datetime):
            values[name] = kind(values[name].timestamp())
    return json.dumps(values)


def decode(text: str) -> Installation:
    values: dict[str, Any] = json.loads(text)
    return Installation(**values)


class RedisInstallationStore(AsyncInstallationStore):
    def __init__(self, records: InstallRecords) -> None:
        self.records = records

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_save(self, installation: Installation) -> None:
        """Stored, or BoltError after `SAVE_ATTEMPTS` tries (bolt's flow then shows the installer
        that the install did not complete: adapters/slack/install_pages.py)."""
        i = installation
        name = record_name(i.enterprise_id, i.team_id, i.is_enterprise_install)
        value = encode(installation)
        for attempt in range(1, SAVE_ATTEMPTS + 1):
            try:
                await self.records.put(name, value)
                break
            except Exception as exc:  # whatever the store raises: Redis away, read-only, failing over
                if attempt == SAVE_ATTEMPTS:
                    log.error("could not store the slack installation for %s (%d tries): %s: %s",
                              name, attempt, type(exc).__name__, exc)
                    raise BoltError(f"the installation could not be stored: {type(exc).__name__}") from None
                log.warning("could not store the slack installation for %s (try %d): %s", name, attempt, exc)
                await asyncio.sleep(SAVE_FIRST_WAIT * 2 ** (attempt - 1))
        log.info("slack installation saved for %s", name)

    async def async_save_bot(self, bot: Bot) -> None:
        """A rotated bot token (bolt's find_bot path): written into the installation it belongs to."""
        found = await self.async_find_installation(
            enterprise_id=bot.enterprise_id, team_id=bot.team_id,
            is_enterprise_install=bot.is_enterprise_install,
        )
        if found is None:
            found = Installation(user_id="", **bot.to_dict_for_copying())
        found.bot_token, found.bot_refresh_token = bot.bot_token, bot.bot_refresh_token
        found.bot_token_expires_at, found.bot_scopes = bot.bot_token_expires_at, bot.bot_scopes
        await self.async_save(found)

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        name = record_name(enterprise_id, team_id, is_enterprise_install)
        try:
            plain = await self.records.get(name)
        except Unreadable:
            log.error(
                "the slack installation for %s cannot be decrypted with SLACK_TOKEN_ENCRYPTION_KEY "
                "(another key?): the workspace must install the app again", name,
            )
            return None
        if plain is None:
            return None
        installation = decode(plain)
        if user_id is not None and installation.user_id != user_id:
            return None  # bot scopes only: there is no other user's installation
        return installation

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        found = await self.async_find_installation(
            enterprise_id=enterprise_id, team_id=team_id, is_enterprise_install=is_enterprise_install
        )
        return None if found is None or found.bot_token is None else found.to_bot()

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self._delete(enterprise_id, team_id)

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        if user_id is None:  # a revoked user token alone leaves the bot's installation
            await self._delete(enterprise_id, team_id)

    async def _delete(self, enterprise_id: str | None, team_id: str | None) -> None:
        """`team_id` None: the org-wide install of `enterprise_id` (see `forget`)."""
        name = record_name(enterprise_id, team_id, team_id is None)
        if await self.records.delete(name):
            log.info("slack installation deleted for %s", name)

    async def forget(self, enterprise_id: str | None, team_id: str | None, org_wide: bool) -> None:
        """`app_uninstalled` / `tokens_revoked`: the installation the event came through, at once."""
        await self.async_delete_all(enterprise_id=enterprise_id, team_id=None if org_wide else team_id)


class SignedStateStore(AsyncOAuthStateStore):
    def __init__(self, states: OneTimeStates, secret: str) -> None:
        self.states = states
        self._secret = secret.encode()

    @property
    def logger(self) -> logging.Logger:
        return log

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        nonce = secrets.token_urlsafe(24)
        await self.states.issue(nonce)
        return f"{nonce}.{self._sign(nonce)}"

    async def async_consume(self, state: str) -> bool:
        nonce, _, signature = (state or "").partition(".")
        if not nonce or not hmac.compare_digest(signature, self._sign(nonce)):
            log.info("refused an OAuth redirect: the state is not one this app signed")
            return False
        if not await self.states.consume(nonce):
            log.info("refused an OAuth redirect: the state expired or was used already")
            return False
        return True
