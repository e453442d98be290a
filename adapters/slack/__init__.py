"""Slack: mention the bot, get a streamed answer in the thread; `/persona` per channel.

`SlackAdapter(settings, engine)` runs it; `platform.py` is what the bot discovers through the
entry point group `chatbot.platforms` (pyproject.toml): when Slack runs, its checks
(`check.py`), its start. See docs/slack.md for setting the app up.

`SlackAdapter` is loaded when first used, so discovering the platform (every command does)
does not import slack_bolt where Slack is not enabled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters import lazy_names

if TYPE_CHECKING:
    from adapters.slack.app import SlackAdapter

__all__ = ["SlackAdapter"]

__getattr__ = lazy_names(__name__, {"SlackAdapter": "adapters.slack.app"})
