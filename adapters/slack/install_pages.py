"""What an installer sees when an install cannot go through: a page, never a 500.

bolt's OAuth flow turns only its own errors into pages; anything else (Redis down while
the install page issues its state or the redirect consumes it) reaches the web server
as a 500 with a traceback. `SafeOAuthFlow` answers those with a page saying the install
did not complete and to try again, and logs one line. An installation that could not be
stored, after `RedisInstallationStore`'s retries, comes here as bolt's `storage_error`
and gets the same page: the workspace is not installed, and its admin knows it.
"""

from __future__ import annotations

import html
import logging

from slack_bolt.oauth.async_callback_options import AsyncFailureArgs, AsyncSuccessArgs
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

log = logging.getLogger(__name__)

UNAVAILABLE = 503  # the bot's storage is away: a passing state, not an error of the page
NOT_COMPLETED = "The install did not complete"
TRY_AGAIN = (
    "The app could not save this workspace's installation just now, so it is not installed. "
    "Nothing was changed in your workspace. Please try again in a minute."
)
NOT_STARTED = "The install could not start"
START_AGAIN = "The app cannot start an install just now. Please try again in a minute."


def page(title: str, text: str, again: str, status: int = UNAVAILABLE) -> BoltResponse:
    """A plain page with a link to start over."""
    title, text, again = html.escape(title), html.escape(text), html.escape(again)
    body = (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head><body>'
        f'<h1>{title}</h1><p>{text}</p><p><a href="{again}">Try again</a></p></body></html>'
    )
    return BoltResponse(status=status, body=body, headers={"Content-Type": "text/html; charset=utf-8"})


async def on_success(args: AsyncSuccessArgs) -> BoltResponse:
    return await args.default.success(args)


async def on_failure(args: AsyncFailureArgs) -> BoltResponse:
    """bolt's page for a refused state, a denied consent…; ours when storing failed."""
    if args.reason == "storage_error":
        return page(NOT_COMPLETED, TRY_AGAIN, args.settings.install_path)
    return await args.default.failure(args)


class SafeOAuthFlow(AsyncOAuthFlow):
    """bolt's flow, whose unexpected failures become pages and one log line each."""

    async def handle_installation(self, request: AsyncBoltRequest) -> BoltResponse:
        try:
            return await super().handle_installation(request)
        except Exception as exc:
            log.error("the Slack install page could not start an install: %s: %s", type(exc).__name__, exc)
            return page(NOT_STARTED, START_AGAIN, self.settings.install_path)

    async def handle_callback(self, request: AsyncBoltRequest) -> BoltResponse:
        try:
            return await super().handle_callback(request)
        except Exception as exc:
            log.error("a Slack install did not complete: %s: %s", type(exc).__name__, exc)
            return page(NOT_COMPLETED, TRY_AGAIN, self.settings.install_path)
