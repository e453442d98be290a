"""Parts (bot.delivery.pacing, rule 5): each rule on the injected clock, real Redis, a recording surface.

When edits cannot keep an answer moving, the message shown stops changing and the rest of
the text goes on in messages of their own. Time moves only when a test moves it
(`ManualClock`), so each rule's threshold is crossed exactly where the test says.
"""

from __future__ import annotations

from bot.contract import Controls, SurfaceLimits
from bot.delivery.pacing import (
    FIRST_PART_AFTER,
    PARAGRAPH_AFTER,
    SENTENCE_AFTER,
    WORD_AFTER,
    Pacer,
    Window,
    part_cut,
)
from bot.delivery.reply import ReplyStream
from bot.delivery.splitting import complete_words
from bot.ops import metrics
from tests.core.test_pacing import ManualClock, clock, pacer
from tests.support.helpers import wait_until
from tests.support.surfaces import RecordingSurface

UPDATES = Window("slack:T1:chat.update", limit=50, per=60, most=100)  # Slack's Tier 3
POSTS = Window("slack:T1:chat.postMessage:C1", limit=100, per=1)


__all__ = ["clock", "pacer"]  # fixtures used by name


def parts_surface(max_chars: int = 4000, *, parts: bool = True) -> RecordingSurface:
    return RecordingSurface(
        limits=SurfaceLimits(
            max_chars=max_chars, min_edit_interval=0.01, post_windows=(POSTS,), edit_windows=(UPDATES,),
            controls=True, parts=parts,
        )
    )


def posts(surface: RecordingSurface) -> list[str]:
    return [w.text for w in surface.writes if w.kind == "post"]


def words(text: str) -> list[str]:
    return text.replace("```python", " ").replace("```", " ").split()


async def others_live(pacer: Pacer, count: int) -> None:
    """`count` other answers hold their finals in the workspace: edits would come 1.2 s × (count + 1)
    apart."""
    for number in range(count):
        assert (await pacer.reserve((UPDATES,), f"other{number}")).ok


async def spend_updates(pacer: Pacer, count: int) -> None:
    for _ in range(count):
        assert await pacer.use((UPDATES,))


# ---- where a part ends (the rule as a function of the text and the wait) -----------------------


def test_a_paragraph_goes_after_a_second_a_sentence_after_1_5_s_words_after_2_s() -> None:
    text = "One. Two three.\n\nFour five. Six seven"
    assert part_cut(text, PARAGRAPH_AFTER - 0.01, first=False, room=4000) is None
    assert text[: part_cut(text, PARAGRAPH_AFTER, first=False, room=4000) or 0] == "One. Two three."
    no_paragraph = "Four five. Six seven"
    assert part_cut(no_paragraph, SENTENCE_AFTER - 0.01, first=False, room=4000) is None
    assert no_paragraph[: part_cut(no_paragraph, SENTENCE_AFTER, first=False, room=4000) or 0] == "Four five."
    no_break = "four five six seven"
    assert part_cut(no_break, WORD_AFTER - 0.01, first=False, room=4000) is None
    assert no_break[: part_cut(no_break, WORD_AFTER, first=False, room=4000) or 0] == "four five six"


def test_the_first_part_goes_after_half_a_second_at_the_best_place_it_has() -> None:
    assert part_cut("Sure. Here it", FIRST_PART_AFTER - 0.01, first=True, room=4000) is None
    assert part_cut("Sure. Here it", FIRST_PART_AFTER, first=True, room=4000) == len("Sure.")
    assert part_cut("one two three", FIRST_PART_AFTER, first=True, room=4000) == len("one two")


def test_a_part_never_takes_the_last_words_and_a_full_message_is_cut_at_once() -> None:
    # The last words wait for the final, which carries the feedback buttons.
    assert part_cut("ends.\n\n", 10.0, first=False, room=4000) is None
    assert part_cut("ends here.\n\n", 10.0, first=False, room=4000) == len("ends")
    assert part_cut("oneword", 10.0, first=False, room=4000) is None
    # Past the room of one message a part goes now, whatever the wait.
    text = "aaaa bbbb cccc dddd"
    assert part_cut(text, 0.0, first=False, room=12) == len("aaaa bbbb")
    assert part_cut("x" * 30, 0.0, first=False, room=12) == 12


def test_a_growing_message_shows_whole_words_only() -> None:
    assert complete_words("one two thr") == "one two"
    assert complete_words("one two ") == "one two "
    assert complete_words("one") == "one"


# ---- the reply stream on the rules ------------------------------------------------------------


async def test_alone_an_answer_stays_one_message_edited_about_once_a_second(
    pacer: Pacer, clock: ManualClock
) -> None:
    surface = parts_surface()
    async with ReplyStream(surface, pacer) as reply:
        reply.add("one two")
        await wait_until(lambda: reply.message_ids, 2)
        for word, shown in ((" three", "two"), (" four", "three"), (" five", "four")):
            clock.t += 1.3  # past the spacing of one answer alone (60 s × 1 / 50)
            reply.add(word)  # shown once the next word begins: it may still be growing
            await wait_until(lambda s=shown: surface.messages["m1"].endswith(s) or reply._parts, 2)
        await reply.finish()
    assert not reply._parts
    assert list(surface.messages.values()) == ["one two three four five"]
    assert [w.kind for w in surface.platform_writes].count("post") == 1


async def test_edits_too_far_apart_keep_the_first_words_and_go_on_in_parts(
    pacer: Pacer, clock: ManualClock
) -> None:
    seen = metrics.reset().registry.get_sample_value
    await others_live(pacer, 2)  # three live answers: an edit each 3.6 s
    surface = parts_surface()
    async with ReplyStream(surface, pacer, answer_id="a1") as reply:
        reply.add("Hello there, this")
        await wait_until(lambda: reply._parts, 2)
        assert posts(surface) == ["Hello there,"]  # at once, whole words, with Stop
        assert surface.controls["m1"] == Controls("a1", stop=True)
        clock.t += PARAGRAPH_AFTER
        reply.add(" is the first paragraph.\n\nAnd")
        await wait_until(lambda: len(posts(surface)) == 2, 2)
        clock.t += SENTENCE_AFTER
        reply.add(" then more words here. Next")
        await wait_until(lambda: len(posts(surface)) == 3, 2)
        await reply.finish()
    assert posts(surface) == [
        "Hello there,", "this is the first paragraph.", "And then more words here.", "Next",
    ]
    # The feedback buttons on the last part only; the first message's Stop taken off with its
    # reserved final edit: the one edit of the answer.
    assert surface.controls == {
        "m1": None, "m2": None, "m3": None, "m4": Controls("a1", feedback=True),
    }
    assert [w.kind for w in surface.platform_writes] == ["post", "post", "post", "post", "edit"]
    assert words(surface.text) == words(reply.text)
    assert seen("chatbot_progress_parts_total", {"platform": "slack"}) == 2
    assert seen("chatbot_progress_longest_wait_seconds_count", {"platform": "slack"}) == 1


async def test_an_answer_whose_final_cannot_be_reserved_shows_its_first_part_after_half_a_second(
    pacer: Pacer, clock: ManualClock
) -> None:
    await spend_updates(pacer, 50)  # the workspace's edits are spent
    surface = parts_surface()
    async with ReplyStream(surface, pacer, answer_id="a2") as reply:
        reply.add("Hi there friend")
        await wait_until(lambda: reply._parts, 2)
        clock.t += FIRST_PART_AFTER
        reply.add(" and more")
        await wait_until(lambda: posts(surface), 2)
        assert posts(surface) == ["Hi there friend and"]
        clock.t += WORD_AFTER
        reply.add(" words without a break")
        await wait_until(lambda: len(posts(surface)) == 2, 2)
        await reply.finish()
    assert posts(surface) == ["Hi there friend and", "more words without a", "break"]
    assert "edit" not in [w.kind for w in surface.writes]  # no edit budget was there to spend
    assert list(surface.controls.values()) == [None, None, Controls("a2", feedback=True)]


async def test_a_refused_progress_edit_turns_a_single_message_into_parts(
    pacer: Pacer, clock: ManualClock
) -> None:
    surface = parts_surface()
    async with ReplyStream(surface, pacer, answer_id="a3") as reply:
        reply.add("One two three")
        await wait_until(lambda: reply.message_ids, 2)
        clock.t += 1.3
        reply.add(" four five")
        await wait_until(lambda: surface.messages["m1"] == "One two three four", 2)
        assert not reply._parts  # alone: edits
        await spend_updates(pacer, 45)  # other answers spent the minute's budget
        clock.t += 1.3
        reply.add(" six seven")
        await wait_until(lambda: reply._parts, 2)
        clock.t += WORD_AFTER
        reply.add(" eight nine")
        await wait_until(lambda: len(posts(surface)) == 2, 2)
        await reply.finish()
    assert list(surface.messages.values()) == ["One two three four", "five six seven eight", "nine"]
    assert list(surface.controls.values()) == [None, None, Controls("a3", feedback=True)]


async def test_code_fences_stay_balanced_across_parts(pacer: Pacer, clock: ManualClock) -> None:
    await spend_updates(pacer, 50)
    surface = parts_surface()
    code = "Look:\n```python\nx = 1\ny = 2\nz = 3\n```\nDone."
    async with ReplyStream(surface, pacer) as reply:
        reply.add(code[:30])  # "Look:\n```python\nx = 1\ny = 2\nz" — inside the block
        await wait_until(lambda: reply._parts, 2)
        clock.t += FIRST_PART_AFTER
        reply.add(code[30:32])
        await wait_until(lambda: posts(surface), 2)
        reply.add(code[32:])
        await reply.finish()
    first, *rest = posts(surface)
    assert first == "Look:\n```python\nx = 1\ny = 2\n```"  # closed where it was cut…
    assert rest[0].startswith("```python\nz = 3\n```")  # …and reopened in the next part
    for message in posts(surface):
        assert message.count("```") % 2 == 0
    assert words(" ".join(posts(surface))) == words(code)


async def test_a_long_answer_in_parts_cuts_each_message_at_the_length_limit(
    pacer: Pacer, clock: ManualClock
) -> None:
    await spend_updates(pacer, 50)
    surface = parts_surface(max_chars=60)
    text = " ".join(f"word{n}" for n in range(80))  # 469 characters, no sentence
    async with ReplyStream(surface, pacer) as reply:
        for start in range(0, len(text), 7):
            reply.add(text[start : start + 7])
            await wait_until(lambda: not reply._changed.is_set(), 2)  # the writer took it
        while_streaming = len(posts(surface))
        await reply.finish()
    assert reply._parts and while_streaming >= 7  # shown as it came, not at the end
    assert all(len(message) <= 60 for message in posts(surface))
    assert len(posts(surface)) >= 8
    assert " ".join(posts(surface)).split() == text.split()


async def test_single_keeps_one_message_whatever_the_load(pacer: Pacer, clock: ManualClock) -> None:
    await others_live(pacer, 5)
    surface = parts_surface(parts=False)  # SLACK_PROGRESS=single
    async with ReplyStream(surface, pacer) as reply:
        reply.add("one two")
        await wait_until(lambda: reply.message_ids, 2)
        clock.t += WORD_AFTER * 2
        reply.add(" three four five")
        await reply.finish()
    assert list(surface.messages.values()) == ["one two three four five"]


async def test_an_answer_done_before_its_first_part_lands_as_one_message(
    pacer: Pacer, clock: ManualClock
) -> None:
    await others_live(pacer, 2)  # parts would follow, but the model is done first
    surface = parts_surface()
    async with ReplyStream(surface, pacer, answer_id="a4") as reply:
        reply.add("Short and")
        await wait_until(lambda: reply._parts, 2)
        reply.add(" sweet.")
        await reply.finish()
    assert surface.messages == {"m1": "Short and sweet."}  # its reserved final edit
    assert surface.controls == {"m1": Controls("a4", feedback=True)}
