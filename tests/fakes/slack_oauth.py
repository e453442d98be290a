"""The fake Slack's OAuth side: workspaces that install the app, their tokens, rotation.

What Slack does, as far as the bot can see it:
- an installer approves the app on slack.com's consent page; Slack redirects to the
  app's redirect URL with `code` and the `state` it was given (`approve`);
- `oauth.v2.access` with the app's client id and secret exchanges the code (once) for
  a bot token; with token rotation on it also returns `expires_in` and a `refresh_token`;
- `oauth.v2.access` with `grant_type=refresh_token` returns a new token and a new
  refresh token (the old refresh token is used up; the old access token lives until
  its expiry);
- uninstalling revokes every token of the workspace and sends `app_uninstalled`.
"""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

_serial = itertools.count(1)


class OAuthError(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass
class Install:
    """A workspace (or an Enterprise Grid org, for an org-wide install) that can install the app."""

    team_id: str | None
    team_name: str = "Team"
    enterprise_id: str | None = None
    bot_user_id: str = "U0BOT"
    bot_id: str = "B0BOT"
    installer: str = "U0INSTALLER"
    token_lifetime: int | None = None  # seconds; None: token rotation off (tokens never expire)
    refreshed_lifetime: int = 12 * 3600  # a refreshed token's (Slack's 12 hours)

    @property
    def org_wide(self) -> bool:
        return self.team_id is None

    @property
    def key(self) -> str:
        return self.team_id or self.enterprise_id or ""


@dataclass
class Token:
    value: str
    install: Install
    expires_at: float | None = None  # time.time()
    revoked: bool = False

    def problem(self) -> str | None:
        if self.revoked:
            return "token_revoked"
        if self.expires_at is not None and time.time() >= self.expires_at:
            return "token_expired"
        return None


@dataclass
class OAuthApp:
    client_id: str = "1111.2222"
    client_secret: str = "fake-client-secret"
    redirect_url: str = ""  # the app's configured Redirect URL (set by the test)
    tokens: dict[str, Token] = field(default_factory=dict)
    codes: dict[str, Install] = field(default_factory=dict)
    refresh_tokens: dict[str, Install] = field(default_factory=dict)
    scopes_granted: list[str] = field(default_factory=list)
    latency: float = 0.0  # seconds oauth.v2.access takes to answer (to make refreshes overlap)

    def add_token(self, value: str, install: Install) -> Token:
        token = Token(value, install)
        self.tokens[value] = token
        return token

    # ---- the installer's browser ---------------------------------------------------------

    def approve(self, authorize_url: str, install: Install) -> str:
        """The installer clicks Allow on the consent page `authorize_url` leads to: the URL
        Slack redirects the browser to (the app's redirect URL with a code and the state)."""
        query = parse_qs(urlsplit(authorize_url).query)
        if query.get("client_id") != [self.client_id]:
            raise OAuthError("invalid_client_id")
        self.scopes_granted = query.get("scope", [""])[0].split(",")
        code = f"code-{next(_serial)}-{secrets.token_hex(4)}"
        self.codes[code] = install
        state = query.get("state", [""])[0]
        return f"{self.redirect_url}?{urlencode({'code': code, 'state': state})}"

    def uninstall(self, install: Install) -> None:
        for token in self.tokens.values():
            if token.install is install:
                token.revoked = True
        for refresh in [r for r, i in self.refresh_tokens.items() if i is install]:
            del self.refresh_tokens[refresh]

    # ---- oauth.v2.access -----------------------------------------------------------------

    def access(self, params: dict[str, Any], basic: tuple[str, str] | None) -> dict[str, Any]:
        given = (str(params.get("client_id", "")), str(params.get("client_secret", "")))
        client_id, client_secret = basic or given
        if client_id != self.client_id:
            raise OAuthError("invalid_client_id")
        if client_secret != self.client_secret:
            raise OAuthError("bad_client_secret")
        if params.get("grant_type") == "refresh_token":
            install = self.refresh_tokens.pop(str(params.get("refresh_token", "")), None)
            if install is None:
                raise OAuthError("invalid_refresh_token")
            return self._grant(install, install.refreshed_lifetime)
        found = self.codes.pop(str(params.get("code", "")), None)
        if found is None:
            raise OAuthError("invalid_code")
        return self._grant(found, found.token_lifetime)

    def _grant(self, install: Install, lifetime: int | None) -> dict[str, Any]:
        token = self.add_token(f"xoxb-test-{install.key}-{next(_serial)}-{secrets.token_hex(6)}", install)
        answer: dict[str, Any] = {
            "access_token": token.value,
            "token_type": "bot",
            "scope": ",".join(self.scopes_granted),
            "bot_user_id": install.bot_user_id,
            "app_id": "A0FAKEAPP",
            "team": None if install.org_wide else {"id": install.team_id, "name": install.team_name},
            "enterprise": {"id": install.enterprise_id, "name": "Org"} if install.enterprise_id else None,
            "is_enterprise_install": install.org_wide,
            "authed_user": {"id": install.installer},
        }
        if lifetime is not None:
            token.expires_at = time.time() + lifetime
            refresh = f"xoxe-test-{next(_serial)}-{secrets.token_hex(6)}"
            self.refresh_tokens[refresh] = install
            answer |= {"expires_in": lifetime, "refresh_token": refresh}
        return answer
