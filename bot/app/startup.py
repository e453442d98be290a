"""Why `python -m bot run` could not start, in one line that names the setting and the fix.

Exit status 2 means a setting is wrong (fix it and start again), 1 that something
outside failed (a platform unreachable, a port taken): see docs/operations.md.
"""

from __future__ import annotations

import logging

from bot.config import ConfigError, Settings
from bot.ops.problems import CONFIG, RUNTIME, Problem, port_in_use, why

log = logging.getLogger(__name__)


class StartupFailed(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.line)
        self.problem = problem


def health_port_problem(port: int, exc: BaseException) -> Problem:
    if port_in_use(exc):
        return Problem(
            f"HEALTH_PORT={port} is already in use by another process: stop that process or set "
            "HEALTH_PORT to a free port.", RUNTIME,
        )
    return Problem(f"cannot serve /healthz on HEALTH_PORT={port}: {why(exc)}", RUNTIME)


def explain(platform: str, exc: BaseException, settings: Settings) -> Problem:
    """The one line for an exception raised while `platform`'s adapter started."""
    if isinstance(exc, ConfigError):
        return Problem(str(exc), CONFIG)  # the adapter already named the setting and the fix
    # Each platform's check module is imported only for the platform that failed, so a process
    # running one platform never loads the other's library (not to dodge a circle: the app layer
    # sits above the adapters, see tests/test_layers.py).
    if platform == "slack":
        from adapters.slack.check import startup_problem as slack_problem

        return slack_problem(exc, settings)
    if platform == "discord":
        from adapters.discord.check import startup_problem as discord_problem

        return discord_problem(exc, settings)
    return Problem(f"{platform} could not start: {why(exc)}", RUNTIME)
