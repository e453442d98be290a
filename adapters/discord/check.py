"""`python -m bot check` for Discord: the token works, the intent is on, and the invite link."""

from __future__ import annotations

import aiohttp
import discord

from adapters.discord.adapter import intent_refused, intents, point_at, token_refused
from adapters.discord.invite import invite_url
from bot.config import Settings
from bot.ops.problems import CONFIG, RUNTIME, CheckFailed, Problem, why


async def check(settings: Settings) -> str:
    token = settings.discord.bot_token
    if not token:
        raise CheckFailed("DISCORD_BOT_TOKEN is not set.")
    point_at(settings.discord)
    client = discord.Client(intents=intents())
    try:
        await client.login(token)
    except discord.LoginFailure:
        raise CheckFailed(str(token_refused())) from None
    except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
        raise CheckFailed(f"cannot reach Discord at {discord.http.Route.BASE}: {exc}") from None
    finally:
        await client.close()
    application = client.application
    assert application is not None and client.user is not None
    flags = application.flags
    if not (flags.gateway_message_content or flags.gateway_message_content_limited):
        raise CheckFailed(str(intent_refused(application.id)))
    return (
        f"logged in as {client.user.name} (application {application.id}); "
        f"add it to a server with {invite_url(application.id)}"
    )


def startup_problem(exc: BaseException, settings: Settings) -> Problem:
    """The one line `run` prints when the Discord adapter could not start."""
    base = discord.http.Route.BASE
    if isinstance(exc, discord.HTTPException) and exc.status < 500:
        return Problem(f"Discord refused the bot's login ({exc.status} {exc.text}): check "
                       "DISCORD_BOT_TOKEN with `./scripts/bot check`.", CONFIG)
    return Problem(
        f"cannot reach Discord at {base} ({why(exc)}): check the network"
        f"{' and DISCORD_API_URL' if settings.discord.api_url else ''}, then start again.", RUNTIME,
    )
