"""Slack markup in, Markdown out."""

from __future__ import annotations

from adapters.slack.formatting import mentioned_users, to_model_text, to_slack_markdown

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
