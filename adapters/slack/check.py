"""`python -m bot check` for Slack: the bot token works, and so does the connection mode.
(Multi-workspace mode has no token to try: `bot.app.installs` counts its installations.)"""

from __future__ import annotations

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.app import api_base
from bot.config import Settings
from bot.ops.problems import CONFIG, RUNTIME, CheckFailed, Problem, port_in_use, why

# Slack's errors that mean "this token is not accepted" (not "Slack is down").
SLACK_TOKEN_ERRORS = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
    "not_allowed_token_type", "invalid_token",
})


async def check(settings: Settings) -> str:
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


def startup_problem(exc: BaseException, settings: Settings) -> Problem:
    """The one line `run` prints when the Slack adapter could not start."""
    base = api_base(settings.slack.api_url)
    if isinstance(exc, SlackApiError):
        error = str(exc.response.get("error") or "")
        if "apps.connections.open" in str(getattr(exc.response, "api_url", "")):
            if error in SLACK_TOKEN_ERRORS:
                return Problem(
                    f"Slack refused SLACK_APP_TOKEN ({error}): create an app-level token (xapp-…) with "
                    "connections:write on the app's Basic Information page, and turn Socket Mode on.",
                    CONFIG,
                )
        elif error in SLACK_TOKEN_ERRORS:
            return Problem(
                f"Slack refused SLACK_BOT_TOKEN ({error}): copy the Bot User OAuth Token (xoxb-…) from "
                "the app's OAuth & Permissions page (reinstall the app if it was revoked).",
                CONFIG,
            )
        return Problem(f"Slack answered {error or 'an error'} at {base}: try again, or see "
                       "`./scripts/bot check`.", RUNTIME)
    if port_in_use(exc):
        return Problem(
            f"SLACK_PORT={settings.slack.port} is already in use by another process: stop that process "
            "or set SLACK_PORT to a free port.", RUNTIME,
        )
    return Problem(
        f"cannot reach Slack at {base} ({why(exc)}): check the network"
        f"{' and SLACK_API_URL' if settings.slack.api_url else ''}, then start again.", RUNTIME,
    )
