"""Slack's multi-workspace mode, from the app layer: the installations its adapter is given
(`bot.contract.Installs` over the bot's Redis), and what `check` says of them."""

from __future__ import annotations

from adapters.slack.installations import PLATFORM, STATE_TTL
from adapters.slack.oauth import INSTALL_PATH
from adapters.slack.scopes import bot_scopes
from bot.config import ConfigError, Settings
from bot.contract import Installs, Unreadable
from bot.ops.problems import CheckFailed, why
from bot.state import store
from bot.state.installations import count, names, open_installs
from bot.state.interface import Client
from bot.state.keys import Keys


def slack_installs(settings: Settings, client: Client) -> Installs:
    try:
        return open_installs(
            client, settings.redis_prefix, PLATFORM, settings.slack.token_encryption_key or "", STATE_TTL
        )
    except ValueError:
        raise ConfigError(
            "SLACK_TOKEN_ENCRYPTION_KEY is not a Fernet key: multi-workspace mode does not start without one."
        ) from None


async def check_slack_installations(settings: Settings) -> str:
    """The scopes can be read, and the stored installations counted and opened (one of them
    decrypted with SLACK_TOKEN_ENCRYPTION_KEY; the settings line says when it is missing)."""
    try:
        scopes = bot_scopes()
    except ConfigError as error:
        raise CheckFailed(str(error)) from None
    if not settings.redis_url:
        raise CheckFailed("multi-workspace mode needs REDIS_URL to count the installations")
    keys = Keys(settings.redis_prefix)
    client = await store.connect(settings)
    try:
        stored = await count(client, keys, PLATFORM)
        sample = sorted(await names(client, keys, PLATFORM))[:1]
        if sample and settings.slack.token_encryption_key:
            try:
                await slack_installs(settings, client).records.get(sample[0])
            except (Unreadable, ConfigError):
                raise CheckFailed(
                    f"{stored} installations stored, but SLACK_TOKEN_ENCRYPTION_KEY does not open them "
                    "(another key?): put the key they were written with first"
                ) from None
    except CheckFailed:
        raise
    except Exception as exc:
        raise CheckFailed(f"cannot count the installations in Redis: {why(exc)}") from None
    finally:
        await client.aclose()
    return (
        f"multi-workspace mode: {stored} installation{'s' if stored != 1 else ''} stored; "
        f"HTTP mode on port {settings.slack.port} (POST /slack/events, install at GET {INSTALL_PATH}); "
        f"{len(scopes)} bot scopes from the manifest"
    )
