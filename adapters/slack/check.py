"""`python -m bot check` for Slack: the bot token works, and so does the connection mode."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.app import api_base
from bot.config import Settings


async def check(settings: Settings) -> str:
    from bot.check import CheckFailed  # the core's error type, imported late: no import cycle

    slack = settings.slack
    client = AsyncWebClient(token=slack.bot_token, base_url=api_base(slack.api_url))
    try:
        auth = await client.auth_test()
    except SlackApiError as exc:
        raise CheckFailed(
            f"Slack refused SLACK_BOT_TOKEN ({exc.response.get('error')}): copy the Bot User OAuth "
            "Token (xoxb-…) from the app's OAuth & Permissions page"
        ) from None
    except Exception as exc:
        raise CheckFailed(f"cannot reach the Slack API at {api_base(slack.api_url)}: {exc}") from None
    detail = f"bot {auth.get('user')} in workspace {auth.get('team')}"
    if slack.mode == "http":
        return f"{detail}; HTTP mode on port {slack.port} (POST /slack/events)"
    try:
        await client.apps_connections_open(app_token=slack.app_token or "")
    except SlackApiError as exc:
        raise CheckFailed(
            f"Slack refused SLACK_APP_TOKEN for Socket Mode ({exc.response.get('error')}): create an "
            "app-level token (xapp-…) with connections:write and turn Socket Mode on"
        ) from None
    return f"{detail}; Socket Mode available"
