"""`python -m bot check`: is everything configured and reachable? One line per check.

Every check runs whatever the others found, so one run shows everything to fix;
the exit status is 1 if any failed.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

from bot import llm
from bot.app.preflight import redis_unreachable, settings_problems
from bot.config import Settings, redact_url
from bot.problems import CheckFailed

Check = Callable[[Settings], Awaitable[str]]

REDIS_TIMEOUT = 3.0  # seconds; an unreachable host would otherwise take the pool's 5 s connect timeout


async def check_settings(settings: Settings) -> str:
    problems = settings_problems(settings)
    if problems:
        raise CheckFailed(" ".join(problems))
    platforms = [name for name, on in (("slack", settings.slack.enabled),
                                       ("discord", settings.discord.enabled)) if on]
    workspaces = "many workspaces (OAuth installs)" if settings.slack.multi_workspace else "one workspace"
    slack = f" (Slack in {settings.slack.mode} mode, {workspaces})" if settings.slack.enabled else ""
    return f"read; platforms enabled: {', '.join(platforms) or 'none'}{slack}"


async def check_redis(settings: Settings) -> str:
    if not settings.redis_url:
        return "embedded in-memory store (REDIS_URL unset: one process, nothing kept)"
    problem = await redis_unreachable(settings, REDIS_TIMEOUT)
    if problem:
        raise CheckFailed(
            f"cannot reach Redis at {redact_url(settings.redis_url)} ({problem}): start Redis there, "
            "fix REDIS_URL, or unset it to use the embedded store"
        )
    return f"reachable at {redact_url(settings.redis_url)}"


async def check_model(settings: Settings) -> str:
    base = settings.model.base_url
    if not settings.model.api_key:
        raise CheckFailed("TOGETHER_API_KEY is not set: put your API key in .env or the environment.")
    client = llm.LLMClient(settings.model)
    request = llm.ChatRequest(
        model=settings.model.model, messages=[{"role": "user", "content": "ping"}], max_tokens=1
    )
    try:
        await client.complete(request)
    except llm.AuthError:
        raise CheckFailed(f"the model API refused TOGETHER_API_KEY (401) at {base}") from None
    except llm.PaymentRequired:
        raise CheckFailed(
            f"the model API at {base} answered 402 Payment Required: the account of TOGETHER_API_KEY "
            "is out of credits or has no payment method; add credits in the provider's billing "
            "settings (Together: https://api.together.ai/settings/billing) or use another key"
        ) from None
    except llm.NotFound:
        raise CheckFailed(
            f"the model API does not know BOT_MODEL={settings.model.model!r}, or "
            f"TOGETHER_BASE_URL={base!r} is wrong (404)"
        ) from None
    except llm.Unavailable as error:
        if error.status is None:
            raise CheckFailed(
                f"cannot reach the model API at {base} ({error.detail or error.user_message}): "
                "check TOGETHER_BASE_URL and the network"
            ) from None
        raise CheckFailed(f"the model API at {base} failed: {error}") from None
    except llm.LLMError as error:
        raise CheckFailed(f"the model API at {base} failed: {error}") from None
    finally:
        await client.aclose()
    return f"{settings.model.model} answers at {base}"


def platform_checks(settings: Settings) -> list[tuple[str, Check]]:
    checks: list[tuple[str, Check]] = []
    # Imported only for the platforms enabled, so a check never loads the library of a platform it
    # does not check (not to dodge a circle: adapters never import the app layer).
    if settings.slack.multi_workspace:
        from bot.app.installs import check_slack_installations

        checks.append(("slack", check_slack_installations))
    elif settings.slack.enabled:
        from adapters.slack import check as slack_check

        checks.append(("slack", slack_check))
    if settings.discord.enabled:
        from adapters.discord import check as discord_check

        checks.append(("discord", discord_check))
    return checks


async def run_checks(settings: Settings, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    checks: list[tuple[str, Check]] = [
        ("settings", check_settings), ("redis", check_redis), ("model", check_model)
    ]
    checks += platform_checks(settings)
    failed = 0
    for name, check in checks:
        try:
            detail = await check(settings)
        except CheckFailed as failure:
            failed += 1
            print(f"FAIL {name}: {failure}", file=out, flush=True)
        except Exception as exc:  # a check that breaks is reported, and the others still run
            failed += 1
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", file=out, flush=True)
        else:
            print(f"ok   {name}: {detail}", file=out, flush=True)
    if not (settings.slack.enabled or settings.discord.enabled):
        print("note platforms: none enabled; set SLACK_BOT_TOKEN (or SLACK_CLIENT_ID) and/or "
              "DISCORD_BOT_TOKEN for `run`",
              file=out)
    if failed:
        print(f"{failed} of {len(checks)} checks failed", file=out)
    return 1 if failed else 0
