"""👍/👎 on finished answers: one vote per person per answer, counted per persona and model.

When an answer with feedback buttons finishes, what it was (platform, channel, persona
preset, model, who asked) is kept for `TTL` in the round trip that releases its
conversation (no extra trip). A press replaces the presser's vote on that answer in one
script (`bot.state`: `FeedbackState.vote`), which also moves the running totals that
`python -m bot usage` reads. A 👎 may carry a reason (a Slack or Discord modal), kept with
the vote. Nothing of the conversation's text is stored here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bot.contract import REASON_MAX_CHARS, VOTE_DOWN, VOTE_UP, Author, ConversationKey
from bot.conversations import sanitize
from bot.ops import metrics
from bot.state.interface import FeedbackState, Queued

TTL = 30 * 24 * 3600  # a vote on an answer older than a month is not taken
VALUES = (VOTE_UP, VOTE_DOWN)
THANKS = "Thanks for the feedback."
UNKNOWN = "That answer is too old (or unknown) for feedback."


@dataclass(frozen=True)
class Totals:
    """Current votes on answers of one persona preset and model, on one platform."""

    platform: str
    persona: str
    model: str
    up: int = 0
    down: int = 0

    @property
    def ratio(self) -> float | None:
        """The share of 👍 among the votes; None without votes."""
        votes = self.up + self.down
        return self.up / votes if votes else None


class Feedback:
    def __init__(self, store: FeedbackState) -> None:
        self.store = store

    def remember(
        self, answer_id: str, conversation: ConversationKey, asker: Author, persona: str, model: str
    ) -> Queued:
        """What to queue when an answer with feedback buttons finishes."""
        fields = {
            "platform": conversation.platform,
            "scope": str(conversation.channel_scope),
            "persona": persona,
            "model": model,
            "asker": asker.id,
        }
        return self.store.remember_answer(answer_id, fields, TTL)

    async def vote(self, answer_id: str, actor: Author, value: str, reason: str = "") -> bool:
        """Record `actor`'s vote, `VOTE_UP` or `VOTE_DOWN` (the engine turns anything else away), replacing
        an earlier one; False for an answer not on record."""
        reason = sanitize.clean(reason).strip()[:REASON_MAX_CHARS]
        result = await self.store.vote(answer_id, actor.id, value, reason, time.time(), TTL)
        if result is None:
            return False
        record, before = result
        labels = (record.get("platform", ""), record.get("persona", ""), record.get("model", ""), value)
        if not before:  # a vote counts once; a changed mind apart; the same press or a reason, nothing
            metrics.feedback_given(*labels)
        elif before != value:
            metrics.feedback_changed(*labels)
        return True

    async def totals(self) -> list[Totals]:
        """Every platform, persona and model with votes, most votes first."""
        counts: dict[tuple[str, str, str], dict[str, int]] = {}
        for field, count in (await self.store.feedback_totals()).items():
            parts = field.split("|")
            if len(parts) < 4:
                continue
            # The model name may hold a "|" of its own; the platform and persona never do.
            platform, persona, model, value = parts[0], parts[1], "|".join(parts[2:-1]), parts[-1]
            if value in VALUES:
                counts.setdefault((platform, persona, model), {})[value] = int(count)
        rows = [Totals(p, s, m, c.get(VOTE_UP, 0), c.get(VOTE_DOWN, 0)) for (p, s, m), c in counts.items()]
        return sorted(rows, key=lambda t: (-(t.up + t.down), t.platform, t.persona, t.model))


def table(rows: list[Totals]) -> str:
    """`python -m bot usage`'s feedback section: current votes and the 👍 share per persona and model."""
    lines = ["Feedback: current votes per platform, persona preset and model", ""]
    if not rows:
        lines.append("No feedback yet.")
        return "\n".join(lines)
    labels = [f"{r.platform} {r.persona} {r.model}" for r in rows]
    width = max(len("platform persona model"), *(len(label) for label in labels))
    head = f"{'platform persona model':<{width}}  {'👍':>6}  {'👎':>6}  {'👍 share':>8}"
    lines += [head, "-" * len(head)]
    for label, row in zip(labels, rows, strict=True):
        share = f"{row.ratio:.0%}" if row.ratio is not None else "-"
        lines.append(f"{label:<{width}}  {row.up:>6,}  {row.down:>6,}  {share:>8}")
    return "\n".join(lines)
