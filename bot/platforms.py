"""Which platforms are installed, and which of them the settings enable.

A platform is any `bot.contract.Platform` registered in the entry-point group
`chatbot.platforms` by an installed distribution: this repository's own (Slack, Discord and the
console, in `pyproject.toml`) or any other. Nothing here or in the app layer names one, so a
platform is added by installing its package (docs/architecture.md, "Adding a platform").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from bot.config import ConfigError, Settings
from bot.contract.platform import GROUP, Platform

log = logging.getLogger(__name__)


def installed() -> list[Platform[Any]]:
    """Every registered platform, once each, in the order of their names (whichever distribution
    registered them, so the order does not depend on the path)."""
    found: dict[str, Platform[Any]] = {}
    for entry in entry_points(group=GROUP):
        if entry.name in found:
            continue  # the same distribution seen twice on the path (a checkout and its install)
        try:
            platform = entry.load()
        except Exception as exc:
            raise ConfigError(
                f"the platform {entry.name!r} ({entry.value}, entry point group {GROUP}) cannot be "
                f"loaded: {type(exc).__name__}: {exc}; reinstall or remove the package that declares it."
            ) from exc
        if not isinstance(platform, Platform) or platform.name != entry.name:
            raise ConfigError(
                f"the entry point {entry.name} = {entry.value} (group {GROUP}) is not a "
                f"bot.contract.Platform named {entry.name!r}: fix the package that declares it."
            )
        found[entry.name] = platform
    return [found[name] for name in sorted(found)]


@dataclass(frozen=True)
class Enabled:
    """A platform the settings turn on, with its own settings."""

    platform: Platform[Any]
    config: Any

    @property
    def name(self) -> str:
        return self.platform.name


def enabled(settings: Settings, platforms: Iterable[Platform[Any]] | None = None) -> list[Enabled]:
    """The platforms `settings` enable; raises ConfigError when one's settings are set but wrong."""
    found = []
    for platform in installed() if platforms is None else platforms:
        try:
            config = platform.configure(settings)
        except ConfigError:
            raise
        except ValueError as error:  # a third party's own reading: said the same way
            raise ConfigError(str(error)) from None
        if config is not None:
            found.append(Enabled(platform, config))
    return found


def named(name: str) -> Platform[Any] | None:
    return next((p for p in installed() if p.name == name), None)


def secrets(settings: Settings, platforms: Iterable[Enabled]) -> list[str]:
    """Every secret in force, the core's and each enabled platform's, for log redaction."""
    values = settings.secrets()
    for on in platforms:
        values += [v for v in on.platform.secrets(on.config) if v and v not in values]
    return values


def enable_hints() -> str:
    """What turns a platform on, each installed one's words: "SLACK_BOT_TOKEN, or …"."""
    return ", or ".join(p.enable_hint for p in installed() if p.enable_hint)


def web_port(settings: Settings) -> int | None:
    """The port of the first enabled platform's web server, if one serves any."""
    for on in enabled(settings):
        port = on.platform.web_port(on.config)
        if port is not None:
            return port
    return None
