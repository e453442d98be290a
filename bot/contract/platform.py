"""A platform as a plug-in: what a platform package exports so the bot can run it without the
bot naming it (docs/architecture.md, "Adding a platform").

A package declares one `Platform` object in the entry-point group `chatbot.platforms` of its
own `pyproject.toml`:

    [project.entry-points."chatbot.platforms"]
    telegram = "chatbot_telegram.platform:platform"

and `bot.platforms` finds it there: Slack, Discord and the console are registered the same way
in this repository's `pyproject.toml`. From then on `run` starts it when its settings enable it,
`check` runs its checks, `/readyz` shows its connection, and its secrets are kept out of the logs.

The module an entry point names should import no platform library at the top: every installed
platform's object is loaded by every command, and only the enabled ones should pay for their
library (`build`, `checks` and `startup_problem` import it when called).

Like the rest of `bot.contract`, this imports nothing else from the core; the core's settings
(`bot.config.Settings`) cross as `Any`, and each platform knows its own settings' type (`C`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from bot.contract.core import Adapter, Core
from bot.contract.installs import Installs

GROUP = "chatbot.platforms"  # the entry-point group platforms are registered in

CONFIG = 2  # exit status: a setting to fix
RUNTIME = 1  # exit status: something outside failed


@dataclass(frozen=True)
class Problem:
    """A startup problem: one line for the person, and the exit status (2 settings, 1 runtime)."""

    line: str
    code: int


class CheckFailed(Exception):
    """The message says precisely what is wrong and how to fix it."""


# One line of `python -m bot check`: the detail when it passes; raises CheckFailed when not.
Check = Callable[[], Awaitable[str]]


class Host(Protocol):
    """What the app layer lends a platform besides the `Core`: the bot's own store, for what a
    platform installed by many workspaces keeps per installation (`bot.contract.installs`)."""

    async def installs(self, platform: str, keys: str, state_ttl: int) -> Installs:
        """`platform`'s installations, encrypted with `keys` (raises ValueError when a key is
        malformed), and its install links' one-time states, each good for `state_ttl` seconds."""
        ...

    async def installation_names(self, platform: str) -> set[str]:
        """The names of `platform`'s stored installations (no key needed to list them)."""
        ...

    def sealing_problem(self, keys: str | None, variable: str) -> str | None:
        """Why `keys` (the setting `variable`) cannot seal installations, or None."""
        ...


C = TypeVar("C")  # a platform's own settings


class Platform(Generic[C]):
    """One platform, as the app layer sees it before it runs: its settings, checks, secrets,
    readiness and how to start it.

    `name`, `configure` and `build` are required; the rest have defaults, so a platform overrides
    only what it has. `settings` is always the core's `bot.config.Settings`, whose `env` holds the
    variables as read (the environment over `.env`, empty values dropped) for a platform that
    reads its own.
    """

    name: str = ""
    # The settings that enable it, for the line `run` prints when no platform is enabled.
    enable_hint: str = ""

    def configure(self, settings: Any) -> C | None:
        """This platform's settings when `settings` enable it, else None. Raises `ValueError`
        (`bot.config.ConfigError`) naming the variable when one is set but wrong."""
        raise NotImplementedError

    async def build(self, config: C, settings: Any, core: Core, host: Host) -> Adapter:
        """The adapter `run` starts (its `name` is the platform's)."""
        raise NotImplementedError

    def describe(self, config: C) -> str:
        """A few words on how it is set up, for `check`'s settings line ("" for nothing)."""
        return ""

    def problems(self, config: C, settings: Any, host: Host) -> list[str]:
        """Settings that parse but cannot work (a token pasted into the wrong variable): one line
        each, naming the variable and the fix, never its value. `run` and `check` refuse them."""
        return []

    def checks(self, config: C, settings: Any, host: Host) -> list[tuple[str, Check]]:
        """`check`'s lines for this platform: (name, check), each reaching the platform."""
        return []

    def secrets(self, config: C) -> list[str]:
        """Secret values of its settings, redacted from every log line."""
        return []

    def web_port(self, config: C) -> int | None:
        """The port of the web server its adapter serves (`Adapter.web_app`), where `/healthz`,
        `/readyz` and `/metrics` are mounted too; None: they get `HEALTH_PORT`."""
        return None

    def startup_problem(self, exc: BaseException, config: C | None, settings: Any) -> Problem:
        """The one line `run` prints when its adapter raised `exc` while starting."""
        text = str(exc)
        reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        return Problem(f"{self.name} could not start: {reason}", RUNTIME)
