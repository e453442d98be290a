"""`python -m bot check`: is everything configured and reachable? One line per check.

Every check runs whatever the others found, so one run shows everything to fix;
the exit status is 1 if any failed.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TextIO

from bot.app.host import StoreHost
from bot.app.preflight import model_problem, redis_unreachable, settings_problems
from bot.config import ProviderSettings, Settings, redact_url
from bot.contract.platform import Check as PlatformCheck
from bot.contract.platform import Host
from bot.model import llm
from bot.model.providers import key_variable, model_ref
from bot.ops.problems import CheckFailed
from bot.platforms import enable_hints, enabled
from bot.tools.check import tool_checks

Check = Callable[[Settings], Awaitable[str]]

REDIS_TIMEOUT = 3.0  # seconds; an unreachable host would otherwise take the pool's 5 s connect timeout


async def check_settings(settings: Settings) -> str:
    platforms = enabled(settings)
    problems = settings_problems(settings, platforms)
    if problems:
        raise CheckFailed(" ".join(problems))
    names = ", ".join(on.name for on in platforms) or "none"
    described = "".join(f" ({words})" for on in platforms if (words := on.platform.describe(on.config)))
    return f"read; platforms enabled: {names}{described}"


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
    return await _check_chat_model(settings, settings.model.model, "BOT_MODEL")


async def _check_chat_model(settings: Settings, spec: str, variable: str) -> str:
    """One token from `spec`, asked of its provider: the key, the URL and the model's name at once."""
    ref = model_ref(spec, frozenset(p.name for p in settings.chain.providers))
    provider = next((p for p in settings.chain.providers if p.name == ref.provider), None)
    base = provider.base_url if provider else settings.model.base_url
    key = provider.api_key if provider else settings.model.api_key
    key_name = key_variable(ref.provider)
    url_name = f"PROVIDER_{ref.provider.upper()}_BASE_URL" if provider else "TOGETHER_BASE_URL"
    if not key:
        raise CheckFailed(f"{key_name} is not set: put your API key in .env or the environment.")
    client = llm.LLMClient(replace(settings.model, base_url=base, api_key=key))
    request = llm.ChatRequest(model=ref.name, messages=[{"role": "user", "content": "ping"}], max_tokens=1)
    try:
        await client.complete(request)
    except llm.AuthError:
        raise CheckFailed(f"the model API refused {key_name} (401) at {base}") from None
    except llm.PaymentRequired:
        raise CheckFailed(
            f"the model API at {base} answered 402 Payment Required: the account of {key_name} "
            "is out of credits or has no payment method; add credits in the provider's billing "
            "settings (Together: https://api.together.ai/settings/billing) or use another key"
        ) from None
    except llm.NotFound:
        raise CheckFailed(
            f"the model API does not know {variable}={spec!r}, or {url_name}={base!r} is wrong (404)"
        ) from None
    except llm.Unavailable as error:
        if error.status is None:
            raise CheckFailed(
                f"cannot reach the model API at {base} ({error.detail or error.user_message}): "
                f"check {url_name} and the network"
            ) from None
        raise CheckFailed(f"the model API at {base} failed: {error}") from None
    except llm.LLMError as error:
        raise CheckFailed(f"the model API at {base} failed: {error}") from None
    finally:
        await client.aclose()
    return f"{spec} answers at {base}"


def model_checks(settings: Settings) -> list[tuple[str, Check]]:
    """BOT_MODEL, each model of BOT_FALLBACK_MODELS, and each provider no model names: `check`
    reaches every provider the chain may use."""
    checks: list[tuple[str, Check]] = [("model", check_model)]
    names = frozenset(p.name for p in settings.chain.providers)
    for spec in settings.chain.fallback_models:
        if spec == settings.model.model:
            continue

        async def check_fallback(settings: Settings, spec: str = spec) -> str:
            return await _check_chat_model(settings, spec, "BOT_FALLBACK_MODELS")

        checks.append((f"fallback {spec}", check_fallback))
    named = {model_ref(m, names).provider for m in (settings.model.model, *settings.chain.fallback_models)}
    for provider in settings.chain.providers:
        if provider.name in named:
            continue

        async def check_provider(settings: Settings, provider: ProviderSettings = provider) -> str:
            problem = await model_problem(
                provider.base_url, provider.api_key or "", REDIS_TIMEOUT * 3, provider.name
            )
            if problem is not None:
                raise CheckFailed(problem.line)
            return f"reachable at {provider.base_url} (no model of the chain names it)"

        checks.append((f"provider {provider.name}", check_provider))
    return checks


def platform_checks(settings: Settings, host: Host) -> list[tuple[str, Check]]:
    """Each enabled platform's own lines (`Platform.checks`); a platform's library is loaded only
    when it is enabled, so a check never loads one it does not check."""
    checks: list[tuple[str, Check]] = []
    for on in enabled(settings):
        for name, check in on.platform.checks(on.config, settings, host):

            async def platform_check(settings: Settings, check: PlatformCheck = check) -> str:
                return await check()

            checks.append((name, platform_check))
    return checks


async def run_checks(settings: Settings, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    checks: list[tuple[str, Check]] = [("settings", check_settings), ("redis", check_redis)]
    checks += model_checks(settings)
    host = StoreHost(settings)  # a platform that keeps installations counts them through it
    checks += platform_checks(settings, host)
    checks += tool_checks(settings)
    failed = 0
    try:
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
    finally:
        await host.aclose()
    if not enabled(settings):
        print(f"note platforms: none enabled; set {enable_hints()} for `run`", file=out)
    if failed:
        print(f"{failed} of {len(checks)} checks failed", file=out)
    return 1 if failed else 0
