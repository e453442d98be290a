"""Slack markup in, Markdown out."""

from __future__ import annotations

import itertools

from adapters.slack.formatting import mentioned_users, to_model_text, to_slack_markdown
from adapters.slack.mentions import defuse

NAMES = {"U0ALICE": "Alice", "U0BOB": "Bob Dylan"}


async def name_of(user_id: str) -> str:
    return NAMES.get(user_id, user_id)


async def test_bot_mention_is_removed_and_others_become_names() -> None:
    text = "<@U0BOT> ask <@U0ALICE> and <@U0BOB|bob> about <#C123|ops> <!here>"
    assert await to_model_text(text, "U0BOT", name_of) == ("ask @Alice and @Bob Dylan about #ops @here")


async def test_links_and_escapes_become_plain_text() -> None:
    text = "see <https://example.com/a?b=1&amp;c=2|the docs>, <https://x.io> &lt;b&gt; a &amp;&amp; b"
    assert await to_model_text(text, "U0BOT", name_of) == (
        "see the docs (https://example.com/a?b=1&c=2), https://x.io <b> a && b"
    )
    assert await to_model_text("<mailto:a@b.c|a@b.c>", "U0BOT", name_of) == "a@b.c"


def test_mentioned_users() -> None:
    assert mentioned_users("<@U1> hi <@W2|w> <#C3>") == {"U1", "W2"}


def test_markdown_goes_out_unchanged() -> None:
    markdown = "# Title\n\n**b** *i* ~~s~~ [l](https://x)\n\n> q\n\n- a\n1. b\n\n```py\nx = 1\n```"
    assert to_slack_markdown(markdown) == markdown


def test_an_open_code_fence_is_closed_while_growing() -> None:
    assert to_slack_markdown("Here:\n```python\ndef f():\n") == "Here:\n```python\ndef f():\n```"
    assert to_slack_markdown("done ```inline``` text") == "done ```inline``` text"


# ---- mentions in model text ------------------------------------------------------------


def test_broadcasts_and_unasked_mentions_are_defused() -> None:
    text = "<!channel> <!here|here> <!EVERYONE> <!subteam^S1|@ops> <@U1> <@W2|w> <@U3> @here @Channel"
    assert defuse(text, frozenset({"U3"})) == (
        "＜!channel> ＜!here|here> ＜!EVERYONE> ＜!subteam^S1|@ops> ＜@U1> ＜@W2|w> <@U3> ＠here ＠Channel"
    )
    assert len(defuse(text)) == len(text)  # splitting at the limit is unaffected


def test_ordinary_text_and_code_are_left_alone() -> None:
    for text in ("a < b and c > d", "<!DOCTYPE html>", "mail me@here.com", "<@bob>", "<#C1|general>",
                 "<https://example.com|link>", "@herein", "user@everyone.org"):
        assert defuse(text) == text


def test_a_growing_text_keeps_its_prefix() -> None:
    """Native streams append only what is new: a token cut at the end is defused already."""
    full = "Hi <!channel> and <@U123>!"
    shown = [defuse(full[:n]) for n in range(len(full) + 1)]
    for shorter, longer in itertools.pairwise(shown):
        assert longer.startswith(shorter), (shorter, longer)


def test_bot_own_user_mentions_can_be_kept() -> None:
    assert defuse("ask <@U1> or <!here>", allowed_users=None) == "ask <@U1> or ＜!here>"
