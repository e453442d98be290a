"""Slack: mention the bot, get a streamed answer in the thread; `/persona` per channel.

`SlackAdapter(settings, engine)` runs it; `check(settings)` backs `python -m bot check`.
See docs/slack.md for setting the app up.
"""

from adapters.slack.app import SlackAdapter
from adapters.slack.check import check

__all__ = ["SlackAdapter", "check"]
