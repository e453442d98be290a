"""Checks before anything starts, shared by `check`, `run` and `chat`.

`load_settings` rejects what cannot be parsed; `settings_problems` catches values
that parse but cannot work (a Slack token pasted into the wrong variable) before
anything connects, so the message names the variable instead of a platform's
refusal. The probes say in one line why Redis or the model API cannot be used.
"""

from __future__ import annotations

from bot.config import TOGETHER, Settings
from bot.model.providers import key_variable, url_variable
from bot.ops.problems import Problem
from bot.state.sealed import key_problem

# Slack's token kinds, by prefix (https://api.slack.com/concepts/token-types).
SLACK_TOKEN_KINDS = {
    "xoxb-": "a bot token",
    "xapp-": "an app-level token",
    "xoxp-": "a user token",
    "xoxe-": "a refresh token",
    "xoxc-": "a browser session token",
}


def _kind(token: str) -> str:
    for prefix, kind in SLACK_TOKEN_KINDS.items():
        if token.startswith(prefix):
            return f"{kind} ({prefix}…)"
    return "not a Slack token"


def settings_problems(settings: Settings) -> list[str]:
    """One line per setting that cannot work, naming it and the fix (never its value)."""
    problems: list[str] = []
    slack = settings.slack
    if slack.bot_token and not slack.bot_token.startswith("xoxb-"):
        problems.append(
            f"SLACK_BOT_TOKEN is {_kind(slack.bot_token)}, not a bot token: copy the Bot User OAuth "
            "Token (xoxb-…) from the app's OAuth & Permissions page."
        )
    app_token = slack.app_token if slack.enabled and slack.mode == "socket" else None
    if app_token and not app_token.startswith("xapp-"):
        problems.append(
            f"SLACK_APP_TOKEN is {_kind(app_token)}, not an app-level token: create one (xapp-…) "
            "with connections:write on the app's Basic Information page."
        )
    if slack.multi_workspace:
        problems += _multi_workspace_problems(settings)
    return problems


def _multi_workspace_problems(settings: Settings) -> list[str]:
    """Multi-workspace mode keeps every workspace's token in Redis, encrypted: it needs both."""
    problems: list[str] = []
    key = key_problem(settings.slack.token_encryption_key, "SLACK_TOKEN_ENCRYPTION_KEY")
    if key:
        problems.append(
            f"{key}: multi-workspace mode (SLACK_CLIENT_ID) keeps each workspace's token in Redis "
            "encrypted with it, and does not start without one. Make one with: python -c 'from "
            "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        )
    if not settings.redis_url:
        problems.append(
            "REDIS_URL is not set: multi-workspace mode (SLACK_CLIENT_ID) keeps the installations in "
            "Redis, and the embedded store would lose them at the next restart."
        )
    return problems


async def redis_unreachable(settings: Settings, timeout: float) -> str | None:
    """Why the configured Redis (server, cluster or Sentinel's master) does not answer PING
    within `timeout` s, or None if it does."""
    from bot.state import store

    return await store.unreachable(settings, timeout)


async def model_problem(
    base_url: str, api_key: str, timeout: float, provider: str = TOGETHER
) -> Problem | None:
    """Can the model API be reached with this key? One free request (GET {base}/models): any
    answer but 401 means it can; a server without that route still proves it is there. The
    words name `provider`'s settings."""
    import httpx

    from bot.model.llm import tls_context

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}  # a local server may need none
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, verify=tls_context()) as client,
            # Only the status matters: the body (every model the provider has) is never read.
            client.stream("GET", f"{base_url}/models", headers=headers) as response,
        ):
            status = response.status_code
    except httpx.HTTPError as exc:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Problem(
            f"cannot reach the model API at {base_url} ({why}): "
            f"check {url_variable(provider)} and the network, or try the fake model with `chat --fake`",
            1,
        )
    if status == 401:
        where = "https://api.together.ai/settings/api-keys" if provider == TOGETHER else "the provider"
        return Problem(
            f"the model API at {base_url} refused {key_variable(provider)} (401): copy a valid key from "
            f"{where} into .env or the environment",
            2,
        )
    return None
