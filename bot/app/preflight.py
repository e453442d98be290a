"""Checks before anything starts, shared by `check`, `run` and `chat`.

`load_settings` rejects what cannot be parsed; `settings_problems` catches values
that parse but cannot work (a platform's token pasted into the wrong variable) before
anything connects, so the message names the variable instead of a platform's
refusal. The probes say in one line why Redis or the model API cannot be used.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.app.host import StoreHost
from bot.config import TOGETHER, Settings
from bot.model.providers import key_variable, url_variable
from bot.ops.problems import Problem
from bot.platforms import Enabled


def settings_problems(settings: Settings, platforms: Iterable[Enabled]) -> list[str]:
    """One line per setting that cannot work, naming it and the fix (never its value): each
    enabled platform says its own (`Platform.problems`)."""
    host = StoreHost(settings)  # problems reach nothing: the host only judges a sealing key
    return [line for on in platforms for line in on.platform.problems(on.config, settings, host)]


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
