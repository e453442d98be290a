"""Slack as a plug-in (`bot.contract.Platform`), registered in `pyproject.toml`'s
`chatbot.platforms`: when it runs, what `check` tries, and what a failed start means.

Its settings are still read with the core's (`bot.config.SlackSettings`, `settings.slack`);
slack_sdk and slack_bolt are imported only once Slack is enabled.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.config import Settings, SlackSettings
from bot.contract import Adapter, Core
from bot.contract.platform import Check, Host, Platform, Problem

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


class SlackPlatform(Platform[SlackSettings]):
    name = "slack"
    enable_hint = "SLACK_BOT_TOKEN (or SLACK_CLIENT_ID and SLACK_CLIENT_SECRET)"

    def configure(self, settings: Settings) -> SlackSettings | None:
        return settings.slack if settings.slack.enabled else None

    async def build(self, config: SlackSettings, settings: Settings, core: Core, host: Host) -> Adapter:
        from adapters.slack.app import SlackAdapter
        from adapters.slack.installations import slack_installs

        installs = await slack_installs(config, host) if config.multi_workspace else None
        return SlackAdapter(settings, core, installs)

    def describe(self, config: SlackSettings) -> str:
        workspaces = "many workspaces (OAuth installs)" if config.multi_workspace else "one workspace"
        return f"Slack in {config.mode} mode, {workspaces}"

    def problems(self, config: SlackSettings, settings: Settings, host: Host) -> list[str]:
        problems: list[str] = []
        if config.bot_token and not config.bot_token.startswith("xoxb-"):
            problems.append(
                f"SLACK_BOT_TOKEN is {_kind(config.bot_token)}, not a bot token: copy the Bot User OAuth "
                "Token (xoxb-…) from the app's OAuth & Permissions page."
            )
        app_token = config.app_token if config.mode == "socket" else None
        if app_token and not app_token.startswith("xapp-"):
            problems.append(
                f"SLACK_APP_TOKEN is {_kind(app_token)}, not an app-level token: create one (xapp-…) "
                "with connections:write on the app's Basic Information page."
            )
        if config.multi_workspace:
            problems += _multi_workspace_problems(config, settings, host)
        return problems

    def checks(self, config: SlackSettings, settings: Settings, host: Host) -> list[tuple[str, Check]]:
        from adapters.slack.check import check, check_installations

        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            logging.getLogger("slack_sdk").setLevel(logging.WARNING)  # its retries are INFO, not the report
        if config.multi_workspace:  # no token to try: the installations are counted instead
            return [(self.name, lambda: check_installations(settings, host))]
        return [(self.name, lambda: check(settings))]

    def web_port(self, config: SlackSettings) -> int | None:
        return config.port if config.mode == "http" else None

    def startup_problem(self, exc: BaseException, config: SlackSettings | None, settings: Any) -> Problem:
        from adapters.slack.check import startup_problem

        return startup_problem(exc, settings)


def _multi_workspace_problems(config: SlackSettings, settings: Settings, host: Host) -> list[str]:
    """Multi-workspace mode keeps every workspace's token in Redis, encrypted: it needs both."""
    problems: list[str] = []
    key = host.sealing_problem(config.token_encryption_key, "SLACK_TOKEN_ENCRYPTION_KEY")
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


platform = SlackPlatform()
