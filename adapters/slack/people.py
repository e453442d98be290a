"""Who is who in a workspace: display names (cached) and admin rights (asked fresh)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

NAME_TTL = 3600.0  # names rarely change; an hour-old name is fine in a prompt
MAX_CACHED = 10_000


class People:
    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client
        self._names: dict[str, tuple[str, float]] = {}
        self._pending: dict[str, asyncio.Future[dict[str, Any] | None]] = {}

    def remember(self, user_id: str, name: str) -> None:
        if len(self._names) >= MAX_CACHED:
            self._names.clear()
        self._names[user_id] = (name, time.monotonic() + NAME_TTL)

    async def name(self, user_id: str) -> str:
        """The name people see in Slack: display name, else real name, else handle."""
        cached = self._names.get(user_id)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        user = await self._info(user_id)
        if user is None:
            return user_id
        profile = user.get("profile") or {}
        name = str(
            profile.get("display_name")
            or profile.get("real_name")
            or user.get("real_name")
            or user.get("name")
            or user_id
        )
        self.remember(user_id, name)
        return name

    async def is_admin(self, user_id: str) -> bool:
        """Workspace admin or owner, asked fresh: rights are not cached."""
        user = await self._info(user_id, shared=False)
        if user is None:
            return False
        return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))

    async def _info(self, user_id: str, shared: bool = True) -> dict[str, Any] | None:
        # Concurrent lookups of one person (50 messages at once) share one users.info call.
        if shared and user_id in self._pending:
            return await asyncio.shield(self._pending[user_id])
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        if shared:
            self._pending[user_id] = future
        result: dict[str, Any] | None = None
        try:
            result = await self._fetch(user_id)
        finally:
            if shared:
                self._pending.pop(user_id, None)
            future.set_result(result)
        return result

    async def _fetch(self, user_id: str) -> dict[str, Any] | None:
        try:
            response = await self._client.users_info(user=user_id)
        except SlackApiError as exc:
            log.warning("users.info failed for %s: %s", user_id, exc.response.get("error"))
            return None
        except Exception as exc:  # a name is a nicety; the answer goes on without it
            log.warning("users.info failed for %s: %s", user_id, type(exc).__name__)
            return None
        user = response.get("user")
        return user if isinstance(user, dict) else None
