"""Payloads Slack sends to an app, and a sender of signed HTTP requests.

The shapes follow what Slack delivers: `event_callback` bodies for the Events API
(wrapped in `events_api` envelopes for Socket Mode), slash-command forms, and
message-shortcut payloads. `SignedSender` posts them to an HTTP-mode app the way
Slack does: `X-Slack-Signature: v0=HMAC-SHA256(secret, "v0:{ts}:{body}")`.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}{next(_ids):08d}"


def event_callback(
    event: dict[str, Any],
    *,
    team_id: str,
    bot_user_id: str,
    app_id: str,
    event_id: str | None = None,
    enterprise_id: str | None = None,
    is_enterprise_install: bool = False,
) -> dict[str, Any]:
    """The Events API body around one event."""
    body: dict[str, Any] = {
        "token": "verification-token-unused",
        "team_id": team_id,
        "api_app_id": app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or new_id("Ev"),
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": enterprise_id,
                "team_id": None if is_enterprise_install else team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": is_enterprise_install,
            }
        ],
        "is_ext_shared_channel": False,
    }
    if enterprise_id:
        body["enterprise_id"] = enterprise_id
    return body


def slash_command(
    *,
    command: str,
    text: str,
    user_id: str,
    channel_id: str,
    team_id: str,
    app_id: str,
    response_url: str,
) -> dict[str, str]:
    """A slash command as Slack sends it (form fields, all strings)."""
    return {
        "token": "verification-token-unused",
        "team_id": team_id,
        "team_domain": "fake",
        "channel_id": channel_id,
        "channel_name": channel_id.lower(),
        "user_id": user_id,
        "user_name": user_id.lower(),
        "command": command,
        "text": text,
        "api_app_id": app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": new_id("trig."),
    }


def message_shortcut(
    *,
    callback_id: str,
    message: dict[str, Any],
    channel_id: str,
    user_id: str,
    team_id: str,
    response_url: str,
) -> dict[str, Any]:
    """A message shortcut (`message_action`) payload."""
    return {
        "type": "message_action",
        "token": "verification-token-unused",
        "callback_id": callback_id,
        "trigger_id": new_id("trig."),
        "action_ts": f"{time.time():.6f}",
        "team": {"id": team_id, "domain": "fake"},
        "user": {"id": user_id, "name": user_id.lower(), "team_id": team_id},
        "channel": {"id": channel_id, "name": channel_id.lower()},
        "message": message,
        "message_ts": message["ts"],
        "response_url": response_url,
        "is_enterprise_install": False,
    }


def block_actions(
    *,
    action: dict[str, Any],
    message: dict[str, Any],
    channel_id: str,
    user_id: str,
    team_id: str,
    app_id: str,
    response_url: str,
) -> dict[str, Any]:
    """A press on a button of a message (`block_actions`): `action` as Slack reports it."""
    container: dict[str, Any] = {
        "type": "message",
        "message_ts": message["ts"],
        "channel_id": channel_id,
        "is_ephemeral": False,
    }
    if message.get("thread_ts"):
        container["thread_ts"] = message["thread_ts"]
    return {
        "type": "block_actions",
        "token": "verification-token-unused",
        "api_app_id": app_id,
        "trigger_id": new_id("trig."),
        "team": {"id": team_id, "domain": "fake"},
        "enterprise": None,
        "is_enterprise_install": False,
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": team_id},
        "container": container,
        "channel": {"id": channel_id, "name": channel_id.lower()},
        "message": message,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [{**action, "action_ts": f"{time.time():.6f}"}],
    }


def view_submission(
    *,
    view: dict[str, Any],
    values: dict[str, dict[str, dict[str, Any]]],
    user_id: str,
    team_id: str,
    app_id: str,
) -> dict[str, Any]:
    """A modal's submit (`view_submission`): `view` as the app opened it, `values` as typed."""
    return {
        "type": "view_submission",
        "token": "verification-token-unused",
        "api_app_id": app_id,
        "trigger_id": new_id("trig."),
        "team": {"id": team_id, "domain": "fake"},
        "enterprise": None,
        "is_enterprise_install": False,
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": team_id},
        "view": {
            **view,
            "id": view.get("id") or new_id("V"),
            "team_id": team_id,
            "app_id": app_id,
            "state": {"values": values},
            "hash": new_id("h."),
        },
        "response_urls": [],
    }


def sign(secret: str, timestamp: str, body: str) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class HttpReply:
    status: int
    body: str
    elapsed: float


class SignedSender:
    """Posts Events API bodies, slash commands and shortcuts to an HTTP-mode app.

    `forge=True` signs with the wrong secret; `age` (seconds) backdates the
    timestamp; `retry_num` adds the retry headers Slack sends on redelivery.
    """

    def __init__(self, url: str, signing_secret: str) -> None:
        self.url = url
        self.signing_secret = signing_secret
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send_event(
        self,
        body: dict[str, Any],
        *,
        forge: bool = False,
        age: float = 0.0,
        retry_num: int | None = None,
    ) -> HttpReply:
        return await self._post(
            json.dumps(body), "application/json", forge=forge, age=age, retry_num=retry_num
        )

    async def send_command(self, form: dict[str, str], **options: Any) -> HttpReply:
        body = urllib.parse.urlencode(form)
        return await self._post(body, "application/x-www-form-urlencoded", **options)

    async def send_interactive(self, payload: dict[str, Any], **options: Any) -> HttpReply:
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        return await self._post(body, "application/x-www-form-urlencoded", **options)

    async def _post(
        self,
        body: str,
        content_type: str,
        *,
        forge: bool = False,
        age: float = 0.0,
        retry_num: int | None = None,
    ) -> HttpReply:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timestamp = str(int(time.time() - age))
        secret = self.signing_secret + ("-forged" if forge else "")
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": sign(secret, timestamp, body),
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        started = time.monotonic()
        async with self._session.post(self.url, data=body.encode(), headers=headers) as resp:
            text = await resp.text()
            return HttpReply(resp.status, text, time.monotonic() - started)
