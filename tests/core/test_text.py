"""Pure pieces: splitting long answers, trimming histories to the token budget."""

from __future__ import annotations

import pytest

from bot.contract import HistoryEntry
from bot.conversations.history import joined_answers
from bot.conversations.sanitize import clean, is_blank
from bot.delivery.splitting import open_fence, split_message
from bot.model.prompt import InputTooLong, build_messages, estimate_tokens
from bot.model.reasoning import InlineThinking


def user(text: str, author: str = "Alice") -> HistoryEntry:
    return HistoryEntry("user", text, author=author)


def bot(text: str) -> HistoryEntry:
    return HistoryEntry("assistant", text)


# -- splitting ------------------------------------------------------------------


def test_short_text_is_one_message() -> None:
    assert split_message("hello", 100) == ["hello"]


def test_splits_at_paragraphs_then_lines_then_words() -> None:
    text = "a" * 60 + "\n\n" + "b" * 60
    assert split_message(text, 100) == ["a" * 60, "b" * 60]
    words = " ".join(["word"] * 50)
    parts = split_message(words, 100)
    assert all(len(p) <= 100 for p in parts)
    assert " ".join(parts) == words  # nothing lost, no word cut in half


def test_unbroken_text_is_cut_hard() -> None:
    parts = split_message("x" * 250, 100)
    assert "".join(parts) == "x" * 250 and all(len(p) <= 100 for p in parts)


def test_no_finished_message_leaves_a_fence_open() -> None:
    code = "Here:\n\n```python\n" + "\n".join(f"value_{i} = {i}" for i in range(200)) + "\n```\nThat's it."
    parts = split_message(code, 300)
    assert len(parts) > 3
    for part in parts:
        assert open_fence(part) is None, part
        assert len(part) <= 300
    assert all(p.startswith("```python") for p in parts[1:-1])


def test_split_is_stable_as_text_grows() -> None:
    text = " ".join(f"w{i}" for i in range(400))
    final = split_message(text, 200)
    for end in range(600, len(text), 37):
        growing = split_message(text[:end], 200)
        assert growing[:-2] == final[: len(growing) - 2]


def test_open_fence_detection() -> None:
    assert open_fence("```js\nx") == "```js"
    assert open_fence("```js\nx\n```") is None
    assert open_fence("````\n```\n") == "````"  # a shorter fence does not close a longer one
    assert open_fence("~~~\ncode") == "~~~"


# -- trimming -------------------------------------------------------------------


def test_messages_in_order_with_names() -> None:
    history = [user("hi"), bot("hello"), user("and you?", author="Bob")]
    messages = build_messages("be nice", history, budget=10_000)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"].startswith("be nice")
    assert messages[3]["content"] == "Bob: and you?"


def test_trimming_drops_oldest_and_keeps_the_current_message() -> None:
    history = [user("old " * 300), bot("reply " * 300), user("mid"), bot("ok"), user("now")]
    budget = estimate_tokens("sys") + 200
    messages = build_messages("sys", history, budget=budget)
    contents = [m["content"] for m in messages[1:]]
    assert contents == ["Alice: mid", "ok", "Alice: now"]


def test_trimmed_history_starts_on_a_user_turn() -> None:
    history = [user("x" * 3000), bot("short"), user("now")]
    messages = build_messages("sys", history, budget=estimate_tokens("sys") + 60)
    assert [m["role"] for m in messages] == ["system", "user"]


def test_current_message_too_long_is_a_clear_error() -> None:
    with pytest.raises(InputTooLong) as caught:
        build_messages("sys", [user("x" * 30_000)], budget=1000)
    assert "too long" in caught.value.user_message


def test_token_estimate_is_conservative_for_cjk() -> None:
    assert estimate_tokens("日本語" * 100) >= 300


def test_an_answer_split_over_messages_is_joined_when_rebuilt() -> None:
    rebuilt = [user("q"), bot("part one"), bot("part two"), user("next"), bot("solo")]
    assert [(e.role, e.content) for e in joined_answers(rebuilt)] == [
        ("user", "q"), ("assistant", "part one\npart two"), ("user", "next"), ("assistant", "solo")
    ]


# ---- inline reasoning, text at the edge ----------------------------------------------

THOUGHT = "<think>INLINETHOUGHT</think>Visible answer here."


def run_thinking(pieces: list[str]) -> tuple[str, str]:
    inline = InlineThinking()
    answer = reasoning = ""
    for piece in [*pieces, None]:
        split = inline.flush() if piece is None else inline.feed(piece)
        answer += split.answer
        reasoning += split.reasoning
    return answer, reasoning


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 13, 100])
def test_inline_think_is_reasoning_wherever_the_chunks_split(size: int) -> None:
    pieces = [THOUGHT[i : i + size] for i in range(0, len(THOUGHT), size)]
    assert run_thinking(pieces) == ("Visible answer here.", "INLINETHOUGHT")


def test_inline_think_only_at_the_start() -> None:
    assert run_thinking(["  \n<thi", "nk>a</thi", "nk>\n\nB"]) == ("B", "a")
    assert run_thinking(["Use <think> tags like <think>x</think>"]) == (
        "Use <think> tags like <think>x</think>", "")
    assert run_thinking(["<thin", "g>"]) == ("<thing>", "")
    assert run_thinking(["<"]) == ("<", "")  # the stream ended: what was held back is text
    assert run_thinking(["<think>never closed"]) == ("", "never closed")


def test_text_is_cleaned_at_the_edge() -> None:
    assert clean("a\ud800b\udfff") == "a\ufffdb\ufffd"
    assert clean("tab\tnew\nline\x00bell\x07") == "tab\tnew\nlinebell"
    assert clean("plain") == "plain"
    clean("x\ud83d").encode("utf-8")  # encodable now
    assert is_blank(" \u200b\u200c\u200d\u2060\ufeff\n\t")
    assert not is_blank("\u200bhi")
    assert not is_blank("…")
