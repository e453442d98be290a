"""No broadcast from model text: Slack mentions in an answer are defused before every write.

Slack turns `<!channel>`, `<!here>`, `<!everyone>`, `<!subteam^ID>` (a user group) and
`<@U123>` into notifications in a message's `text` (mrkdwn) and, as far as its documents
and behaviour show, in `markdown_text` and `markdown` blocks too, which go through the
same mention parsing after the Markdown is translated. With `link_names` (never set
here) a bare `@channel` pings too; some clients do so for `markdown_text`. A model that
writes any of these, because a prompt asked it to or by accident, must not ping a
channel, a user group or someone the person did not mention.

So every text the bot writes to Slack goes through `defuse`: the `<` of each such token
becomes `＜` (U+FF1C) and the `@` of a bare `@channel`/`@here`/`@everyone` becomes `＠`
(U+FF20). Both keep the text readable and its length (splitting is unaffected), and
Slack parses neither. User mentions that the person wrote themselves stay live. No
setting or persona turns this off. A `<` token cut at the end of a growing text is
defused too, so the text keeps its prefix as it grows (native streams append to it; a
bare `@here` completed later is the rare exception, and the native surface then finishes
that message with chat.update).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from bot.contract import Controls, FinishingSurface, ReplySurface, StepSurface, StepView, SurfaceLimits

SAFE_ANGLE = "\uff1c"
SAFE_AT = "\uff20"
BROADCASTS = ("!channel", "!here", "!everyone", "!subteam^")
_ANGLE = re.compile(r"<(?=[!@]|$)")  # a "<" ending the text may be a token cut short
_USER = re.compile(r"@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_USER_CUT = re.compile(r"@(?:[UW][A-Z0-9]*(?:\|[^>]*)?)?")
_BARE = re.compile(r"(?<![\w@.])@(?=(?:channel|here|everyone)\b)", re.IGNORECASE)


def defuse(text: str, allowed_users: frozenset[str] | None = frozenset()) -> str:
    """`text` with every broadcast and every user mention not in `allowed_users` made inert
    (`None`: user mentions are the bot's own words, e.g. who may change a persona, and stay)."""
    if "<" in text:
        text = _ANGLE.sub(lambda m: SAFE_ANGLE if _live(text, m.end(), allowed_users) else "<", text)
    if "@" in text:
        text = _BARE.sub(SAFE_AT, text)
    return text


def _live(text: str, start: int, allowed: frozenset[str] | None) -> bool:
    """Whether the token after a `<` at `start - 1` would notify someone."""
    head = text[start : start + 12].lower()
    at_end = len(text) - start < 12
    for word in BROADCASTS:
        if head.startswith(word) or (at_end and word.startswith(head)):
            return True
    if allowed is not None and text.startswith("@", start):
        user = _USER.match(text, start)
        if user is not None:
            return user.group(1) not in allowed
        # A mention still being written at the very end of the text.
        return _USER_CUT.fullmatch(text, start) is not None
    return False


class MentionSafeSurface:
    """A Slack reply surface whose every write is defused first."""

    def __init__(self, inner: ReplySurface, allowed_users: frozenset[str] = frozenset()) -> None:
        self.inner = inner
        self.allowed_users = allowed_users

    @property
    def limits(self) -> SurfaceLimits:
        return self.inner.limits

    async def post(self, text: str, *, complete: bool = False, controls: Controls | None = None) -> str:
        return await self.inner.post(defuse(text, self.allowed_users), complete=complete, controls=controls)

    async def edit(self, message_id: str, text: str, *, controls: Controls | None = None) -> None:
        await self.inner.edit(message_id, defuse(text, self.allowed_users), controls=controls)

    async def delete(self, message_id: str) -> None:
        await self.inner.delete(message_id)

    def show_steps(self, steps: Sequence[StepView]) -> bool:
        """A step's title, arguments and result line are outside text too: defused like the answer."""
        if not isinstance(self.inner, StepSurface):
            return False
        safe = [replace(step, **{name: defuse(getattr(step, name), self.allowed_users)
                                 for name in ("title", "details", "output", "line")}) for step in steps]
        return self.inner.show_steps(safe)

    async def set_status(self, status: str | None) -> None:
        await self.inner.set_status(status)

    async def finish(self, *, affordable: bool = True) -> None:
        if isinstance(self.inner, FinishingSurface):
            await self.inner.finish(affordable=affordable)
