"""`python -m bot check`: is everything configured and reachable? One line per check."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

from bot import llm, store
from bot.config import Settings, redact_url

Check = Callable[[Settings], Awaitable[str]]


class CheckFailed(Exception):
    """The message says precisely what is wrong and how to fix it."""


async def check_redis(settings: Settings) -> str:
    if not settings.redis_url:
        return "embedded in-memory store (REDIS_URL unset: one process, nothing kept)"
    client = store.connect(settings)
    try:
        await client.ping()
    except Exception as exc:
        raise CheckFailed(f"cannot reach Redis at {redact_url(settings.redis_url)}: {exc}") from None
    finally:
        await client.aclose()
    return f"reachable at {redact_url(settings.redis_url)}"


async def check_model(settings: Settings) -> str:
    if not settings.model.api_key:
        raise CheckFailed("TOGETHER_API_KEY is not set: put your API key in .env or the environment.")
    client = llm.LLMClient(settings.model)
    request = llm.ChatRequest(
        model=settings.model.model, messages=[{"role": "user", "content": "ping"}], max_tokens=1
    )
    try:
        await client.complete(request)
    except llm.AuthError:
        raise CheckFailed(
            f"the model API refused TOGETHER_API_KEY (401) at {settings.model.base_url}"
        ) from None
    except llm.NotFound:
        raise CheckFailed(
            f"the model API does not know BOT_MODEL={settings.model.model!r}, or "
            f"TOGETHER_BASE_URL={settings.model.base_url!r} is wrong (404)"
        ) from None
    except llm.LLMError as error:
        raise CheckFailed(f"the model API at {settings.model.base_url} failed: {error}") from None
    finally:
        await client.aclose()
    return f"{settings.model.model} answers at {settings.model.base_url}"


def platform_checks(settings: Settings) -> list[tuple[str, Check]]:
    checks: list[tuple[str, Check]] = []
    if settings.slack.enabled:
        from adapters.slack import check as slack_check

        checks.append(("slack", slack_check))
    if settings.discord.enabled:
        from adapters.discord import check as discord_check

        checks.append(("discord", discord_check))
    return checks


async def run_checks(settings: Settings) -> int:
    checks: list[tuple[str, Check]] = [("redis", check_redis), ("model", check_model)]
    checks += platform_checks(settings)
    for name, check in checks:
        try:
            detail = await check(settings)
        except CheckFailed as failure:
            print(f"FAIL {name}: {failure}")
            return 1
        print(f"ok   {name}: {detail}")
    if not (settings.slack.enabled or settings.discord.enabled):
        print("note platforms: none enabled; set SLACK_BOT_TOKEN and/or DISCORD_BOT_TOKEN for `run`",
              file=sys.stderr)
    return 0
