"""Text in and out of Slack.

In: a person's message arrives in Slack's markup (`<@U123>`, `<#C1|general>`,
`<https://x|label>`, `&amp;`). The model gets plain text: the bot's own mention
removed, other mentions as `@Display Name`, links as `label (url)`.

Out: the model writes Markdown and Slack renders Markdown itself when a message is
sent as `markdown_text` (chat.postMessage, chat.update, and the chunks of
chat.startStream/appendStream/stopStream all take it, up to 12,000 characters), so
the answer goes out unchanged: bold, italics, ~~strike~~, links, headings, lists,
quotes, inline and fenced code with a language tag. The one adjustment: while an
answer is still growing, a code fence the model has opened but not yet closed is
closed in the shown text, so the partial code renders as code instead of swallowing
the rest of the message.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from bot.delivery.splitting import FENCE_CLOSE, open_fence

USER_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>")
CHANNEL_MENTION = re.compile(r"<#([CG][A-Z0-9]+)(?:\|([^>]*))?>")
SPECIAL_MENTION = re.compile(r"<!(here|channel|everyone)(?:\|[^>]*)?>")
SUBTEAM_MENTION = re.compile(r"<!subteam\^[A-Z0-9]+(?:\|([^>]*))?>")
LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]+))?>")


def mentioned_users(text: str) -> set[str]:
    return {match.group(1) for match in USER_MENTION.finditer(text)}


async def to_model_text(text: str, bot_user_id: str, name_of: Callable[[str], Awaitable[str]]) -> str:
    """A Slack message as the model should read it."""
    names: dict[str, str] = {}
    for user_id in mentioned_users(text) - {bot_user_id}:
        names[user_id] = await name_of(user_id)

    def user(match: re.Match[str]) -> str:
        if match.group(1) == bot_user_id:
            return ""
        return "@" + (names.get(match.group(1)) or match.group(2) or match.group(1))

    text = USER_MENTION.sub(user, text)
    text = CHANNEL_MENTION.sub(lambda m: "#" + (m.group(2) or m.group(1)), text)
    text = SPECIAL_MENTION.sub(lambda m: "@" + m.group(1), text)
    text = SUBTEAM_MENTION.sub(lambda m: "@" + (m.group(1) or "group").lstrip("@"), text)
    text = LINK.sub(_link, text)
    # Slack escapes only these three; unescape &amp; last so "&amp;lt;" stays "&lt;".
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _link(match: re.Match[str]) -> str:
    url, label = match.group(1), match.group(2)
    if url.startswith("mailto:"):
        return label or url[len("mailto:") :]
    if not label or label == url:
        return url
    return f"{label} ({url})"


def to_slack_markdown(text: str) -> str:
    """The `markdown_text` to send for `text` (the model's Markdown)."""
    if open_fence(text) is not None:
        return text.rstrip("\n") + FENCE_CLOSE
    return text
