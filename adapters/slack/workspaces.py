"""One workspace as the adapter sees it: the client with that workspace's token, and what
reads and writes through it (names, threads, the intake, /persona).

With SLACK_BOT_TOKEN there is one, built at start. In multi-workspace mode each is
built the first time bolt authorizes an event from that workspace (the token from its
installation) and kept while used; a rotated token is put into the same client, so
answers already streaming write with it too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.assistant import AssistantThreads
from adapters.slack.commands import Commands
from adapters.slack.intake import Intake
from adapters.slack.presses import Actions
from adapters.slack.summaries import SlackSummaries
from adapters.slack.threads import Identity
from bot.lru import Lru

MOST_KEPT = 1_000  # workspaces kept built; the least recently used one is dropped beyond


@dataclass
class Workspace:
    client: AsyncWebClient
    me: Identity
    intake: Intake
    commands: Commands
    actions: Actions  # Stop, 👍/👎 and the reason form
    assistant: AssistantThreads  # Slack's assistant panel
    summaries: SlackSummaries  # "Summarize thread" and /summarize


Build = Callable[[AsyncWebClient, Identity], Workspace]


class Workspaces:
    def __init__(
        self, build: Build, new_client: Callable[[str], AsyncWebClient], most: int = MOST_KEPT
    ) -> None:
        self._build = build
        self._new_client = new_client
        self._kept: Lru[str, Workspace] = Lru(most)

    def get(self, key: str, token: str, me: Identity) -> Workspace:
        workspace = self._kept.get(key)
        if workspace is None or workspace.me != me:
            workspace = self._build(self._new_client(token), me)
            self._kept[key] = workspace
        elif workspace.client.token != token:
            workspace.client.token = token  # rotated (or reinstalled): one client, the newest token
        self._kept.move_to_end(key)
        return workspace

    def find(self, key: str) -> Workspace | None:
        return self._kept.get(key)

    def drop(self, key: str) -> None:
        self._kept.pop(key, None)

    def __len__(self) -> int:
        return len(self._kept)
