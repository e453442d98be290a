"""What the bot writes in Slack: Markdown, long answers, rate limits, errors, status."""

from __future__ import annotations

import pytest

from bot.delivery.splitting import open_fence
from tests.fakes.llm import Answer, FakeLLM
from tests.support.slack_fixtures import ALICE, BOB, BOT, slack_rig

MARKDOWN = """# Rotating a key

**Bold**, *italic*, ~~strike~~ and a [link](https://example.com/docs?a=1&b=2).

- first step
- second step
  1. nested

> Quote: keys are like toothbrushes.

Inline `kubectl` and a block:

```python
def rotate(key: str) -> str:
    return key[::-1]  # <not> a real rotation
```

Done."""


async def test_markdown_is_sent_as_markdown_in_every_write(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of(MARKDOWN, chunk=3, tokens_per_second=120)
    async with slack_rig(base_env, fake_llm) as rig:
        msg = await rig.say("C1", ALICE, f"<@{BOT}> how?")
        await rig.wait_reply(msg, MARKDOWN)
        writes = rig.fake.writes()
        assert len(writes) >= 2
        for write in writes:
            # Slack renders Markdown itself: `markdown_text`, or one `markdown` block beside the
            # buttons (Slack takes no blocks next to markdown_text); never mrkdwn `text` alone.
            shown = write.markdown
            assert shown is not None
            if "blocks" in write.params:
                assert write.params["blocks"][0]["type"] == "markdown"
            # A fence still open in a growing answer is closed in what is shown.
            assert open_fence(shown) is None
        assert writes[-1].markdown == MARKDOWN


async def test_answer_longer_than_a_message_continues_in_the_thread(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(2500)  # about 15,000 characters
    async with slack_rig(base_env, fake_llm, BOT_MAX_TOKENS="4000") as rig:
        msg = await rig.say("C1", ALICE, f"<@{BOT}> tell me everything")
        replies = await rig.fake.wait_for(
            lambda: (
                len(rig.fake.bot_replies("C1", msg.ts)) == 2
                and rig.engine.live_answers == 0
                and rig.fake.bot_replies("C1", msg.ts)
            ),
            10,
        )
        texts = [r.visible for r in replies]
        assert all(len(t) <= 12_000 for t in texts)
        assert " ".join(texts) == fake_llm.answer.text  # complete, nothing lost at the cut
        assert all(w.ok for w in rig.fake.writes())


@pytest.mark.long
async def test_rate_limited_updates_still_end_with_the_exact_text(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(40, tokens_per_second=40)
    async with slack_rig(base_env, fake_llm) as rig:
        rig.fake.fail_next("chat.update", "ratelimited", times=3, retry_after=1)
        msg = await rig.say("C1", ALICE, f"<@{BOT}> go")
        await rig.wait_reply(msg, fake_llm.answer.text, within=15)
        statuses = [c.status for c in rig.fake.calls_to("chat.update")]
        assert statuses.count(429) == 3
        assert statuses[-1] == 200
        # After a 429 the bot waited Retry-After before the next update.
        limited = [c for c in rig.fake.calls_to("chat.update") if c.status == 429]
        later = [c for c in rig.fake.calls_to("chat.update") if c.at > limited[-1].at]
        assert later and later[0].at - limited[-1].at >= 0.9


# The wall clock: the bot spaces posts 1.1 s for Slack's 1 per s, a margin for requests that
# arrive unevenly; on a clock four times faster it would cover a quarter of the jitter.
@pytest.mark.real_time
async def test_two_answers_in_one_channel_share_its_post_pace(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(10, tokens_per_second=50)
    async with slack_rig(base_env, fake_llm) as rig:
        rig.fake.enforce_limits()  # chat.postMessage 1/s per channel, chat.update 50/min
        first = await rig.say("C1", ALICE, f"<@{BOT}> one")
        second = await rig.say("C1", BOB, f"<@{BOT}> two")
        await rig.wait_reply(first, fake_llm.answer.text)
        await rig.wait_reply(second, fake_llm.answer.text)
        posts = rig.fake.calls_to("chat.postMessage")
        assert [c.status for c in posts] == [200, 200]  # paced, not rejected
        assert posts[1].at - posts[0].at >= 0.9


async def test_model_failure_is_explained_in_the_thread(base_env: dict[str, str], fake_llm: FakeLLM) -> None:
    fake_llm.fail_next("503", times=10)
    async with slack_rig(base_env, fake_llm) as rig:
        msg = await rig.say("C1", ALICE, f"<@{BOT}> hello?")
        await rig.fake.wait_for(lambda: rig.fake.bot_replies("C1", msg.ts))
        await rig.idle()
        text = rig.fake.seen_text("C1", msg.ts)
        assert "unavailable" in text and "503" in text
        assert "test-key" not in text and "xoxb" not in text


@pytest.mark.parametrize("refuse_status", [False, True])
async def test_status_is_shown_while_waiting(
    base_env: dict[str, str], fake_llm: FakeLLM, refuse_status: bool
) -> None:
    fake_llm.answer = Answer.of("Thought about it.", first_token_delay=0.8)
    async with slack_rig(base_env, fake_llm) as rig:
        if refuse_status:
            rig.fake.fail_next("assistant.threads.setStatus", "missing_scope", times=None)
        msg = await rig.say("C1", ALICE, f"<@{BOT}> think")
        await rig.wait_reply(msg, "Thought about it.")
        first_post = rig.fake.calls_to("chat.postMessage")[0].at
        if not refuse_status:
            status = rig.fake.statuses[0]
            assert (status.thread_ts, status.status) == (msg.ts, "is thinking…")
            assert status.at < first_post
        else:
            added = rig.fake.calls_to("reactions.add")
            assert added[0].params["timestamp"] == msg.ts and added[0].at < first_post
            # The reaction is taken away once the answer shows.
            await rig.fake.wait_for(lambda: rig.fake.calls_to("reactions.remove"))
            assert rig.fake.reactions[("C1", msg.ts)] == set()
