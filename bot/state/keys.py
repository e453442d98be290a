"""Every Redis key of the bot, named in one place (docs/architecture.md, "State and the Redis layout").

The Cluster rule: keys one script or transaction touches together must hash to
one slot, so they share a hash tag (the part in braces):

- a conversation's keys (history, lock) share `{platform:workspace:channel:thread}`;
- a pacing window's keys (sent, holds, meta) share `{platform:owner}`, so one write's
  windows, which all belong to one workspace or bot, run in one Lua call;
- feedback's keys (an answer's record, its votes, the totals) share `{feedback}`: one
  script reads the record, replaces a vote and moves the totals (few writes: one slot).

Every other key is read or written on its own or in a non-transactional
pipeline (which redis-py's Cluster client splits by slot), so it needs no tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


# What the keys need of `bot.contract`'s ConversationKey and ChannelScope, declared here:
# the contract imports bot.delivery.pacing, which names its keys here, so importing the contract
# back would close an import circle (tests/app/test_layers.py).
class ConversationKey(Protocol):
    @property
    def platform(self) -> str: ...
    @property
    def workspace(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def thread(self) -> str: ...


class ChannelScope(Protocol):
    @property
    def platform(self) -> str: ...
    @property
    def workspace(self) -> str: ...
    @property
    def channel(self) -> str: ...


# The kinds of usage hash (one per UTC day each).
CHANNEL, USER, PERSONA, SERVER = "channel", "user", "persona", "server"
USAGE_KINDS = (CHANNEL, USER, PERSONA, SERVER)


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (`REDIS_PREFIX`)."""

    prefix: str

    # ---- a conversation: one hash tag ---------------------------------------------------

    def _conversation(self, conversation: ConversationKey) -> str:
        c = conversation  # the hash tag: {platform:workspace:channel:thread}
        return f"{self.prefix}:conv:{{{c.platform}:{c.workspace}:{c.channel}:{c.thread}}}"

    def history(self, conversation: ConversationKey) -> str:
        """List of JSON entries, oldest first; TTL `HISTORY_TTL`, capped at `HISTORY_MAX_TURNS`."""
        return f"{self._conversation(conversation)}:history"

    def context(self, conversation: ConversationKey) -> str:
        """Hash of what the platform says about the conversation (Slack's assistant thread: the
        channel the person looks at, whether it has its title); TTL `HISTORY_TTL`."""
        return f"{self._conversation(conversation)}:context"

    def lock(self, conversation: ConversationKey) -> str:
        """String (a token), PX 30 s, renewed while an answer streams."""
        return f"{self._conversation(conversation)}:lock"

    # ---- personas, claims, limits ------------------------------------------------------

    def persona(self, scope: ChannelScope) -> str:
        """Hash of `Persona.to_hash()`; no TTL."""
        return f"{self.prefix}:persona:{scope.platform}:{scope.workspace}:{scope.channel}"

    def seen(self, platform: str, event_id: str) -> str:
        """String "1", EX 1 hour: the event was claimed (bot.engine.Engine.claim)."""
        return f"{self.prefix}:seen:{platform}:{event_id}"

    def rate(self, platform: str, user_id: str) -> str:
        """Sorted set of message times (the last 60 s), EXPIRE 61 s."""
        return f"{self.prefix}:rate:{platform}:{user_id}"

    # ---- usage ---------------------------------------------------------------------------

    def usage(self, day: str, kind: str) -> str:
        """Hash "who|in" / "|out" / "|answers" -> count, per UTC day and kind; 35 days."""
        return f"{self.prefix}:usage:{day}:{kind}"

    @property
    def usage_names(self) -> str:
        """Hash "platform:user id" -> display name; 35 days."""
        return f"{self.prefix}:usage:names"

    # ---- answers in flight -------------------------------------------------------------

    @property
    def owners(self) -> str:
        """Set of process ids that may have records; no TTL (the sweep empties it)."""
        return f"{self.prefix}:owners"

    def heartbeat(self, owner: str) -> str:
        """String "1", PX the owner TTL: the process is alive."""
        return f"{self.prefix}:owner:{owner}"

    def inflight(self, owner: str) -> str:
        """Hash answer id -> JSON `Record`; EXPIRE 7 days (`bot.ops.inflight.RECORD_TTL`)."""
        return f"{self.prefix}:inflight:{owner}"

    # ---- feedback: one hash tag -----------------------------------------------------------

    def feedback_answer(self, answer_id: str) -> str:
        """Hash: what a finished answer was (platform, scope, persona, model, asker); 30 days."""
        return f"{self.prefix}:{{feedback}}:answer:{answer_id}"

    def feedback_votes(self, answer_id: str) -> str:
        """Hash user id -> JSON {value, reason, at}: one vote per person; 30 days."""
        return f"{self.prefix}:{{feedback}}:votes:{answer_id}"

    @property
    def feedback_totals(self) -> str:
        """Hash "platform|persona|model|up" / "…|down" -> count of current votes; no TTL."""
        return f"{self.prefix}:{{feedback}}:totals"

    # ---- Stop across replicas (bot.delivery.stops) ------------------------------------------------

    @property
    def stops(self) -> str:
        """The pub/sub channel Stop presses are published on (a channel, not a key)."""
        return f"{self.prefix}:stops"

    def stop_reply(self, token: str) -> str:
        """List: the streaming process's verdict on one published press; 10 s."""
        return f"{self.prefix}:stop-reply:{token}"

    # ---- leases ----------------------------------------------------------------------------

    def lease(self, name: str) -> str:
        """String: who holds the lease `name` (e.g. "discord:shard:3"), PX `bot.ops.leases.LEASE_TTL`."""
        return f"{self.prefix}:lease:{name}"

    # ---- installations (Slack multi-workspace mode) ------------------------------------

    def installation(self, platform: str, name: str) -> str:
        """String: a Fernet token of the installation's JSON (`bot.state.sealed`); no TTL.
        `name` is "enterprise:team", "-" for a part that is absent (bot.state.installations)."""
        return f"{self.prefix}:install:{platform}:{name}"

    def installations(self, platform: str) -> str:
        """Set of the installation names stored for `platform`; no TTL."""
        return f"{self.prefix}:installs:{platform}"

    def oauth_state(self, platform: str, state: str) -> str:
        """String "1", EX the state's lifetime (10 minutes): an install link not yet used."""
        return f"{self.prefix}:oauth-state:{platform}:{state}"

    # ---- one workspace's keys, for `python -m bot forget-workspace` ---------------------

    def workspace_patterns(self, platform: str, workspace: str) -> list[str]:
        """SCAN patterns of the keys that belong to one workspace: its conversations, personas,
        pacing windows and claims (a Slack claim starts with the team id, adapters.slack.intake)."""
        p = self.prefix
        return [
            f"{p}:conv:{{{platform}:{workspace}:*",
            f"{p}:persona:{platform}:{workspace}:*",
            f"{p}:pace:{{{platform}:{workspace}}}:*",
            f"{p}:seen:{platform}:{workspace}:*",
        ]

    @property
    def channel_usage_pattern(self) -> str:
        """SCAN pattern of the per-channel usage hashes (fields "platform:workspace:channel|…")."""
        return f"{self.prefix}:usage:*:{CHANNEL}"

    # ---- pacing: one hash tag per platform owner ----------------------------------------

    def pace(self, scope: str) -> list[str]:
        """The sent, holds and meta keys of the pacing window `scope` ("platform:owner:what…").

        sorted set, sorted set, hash; each expires with its window (bot.delivery.pacing's script).
        """
        platform, owner, what = [*scope.split(":", 2), "", ""][:3]
        base = f"{self.prefix}:pace:{{{platform}:{owner}}}:{what}"
        return [f"{base}:sent", f"{base}:holds", f"{base}:meta"]
