"""Feedback counts votes, not presses: 200 alternating presses by one person in 10 s are one vote
in chatbot_feedback_total (the changed minds apart), a few private replies, one reason form.
End to end: the real slack-bolt against the fake Slack, Redis."""

from __future__ import annotations

import redis.asyncio as redis

from adapters.slack.controls import FEEDBACK_ACTION
from bot.conversations.presses import PressReplies
from bot.ops import metrics
from tests.core.test_feedback import answered, value_of, votes
from tests.fakes.llm import Answer, FakeLLM
from tests.support.helpers import wait_until
from tests.support.slack_fixtures import ALICE, slack_rig

PRESSES = 200
SECONDS = 10.0


async def test_200_presses_by_one_person_are_one_vote_a_few_replies_and_one_form(
    base_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis, redis_prefix: str
) -> None:
    metrics.reset()
    fake_llm.answer = Answer.words(6)
    async with slack_rig(base_env, fake_llm) as rig:
        reply = await answered(rig, "hello")
        answer_id = value_of(reply, "up").split(":", 1)[1]
        clock = fake_llm.clock
        started = clock.now()
        sample = metrics.current().registry.get_sample_value
        labels = {"platform": "slack", "persona": "default", "model": "test/model"}

        def counted() -> float:
            names = ("chatbot_feedback_total", "chatbot_feedback_changes_total")
            return sum(sample(n, labels | {"value": v}) or 0 for n in names for v in ("up", "down"))

        for n in range(PRESSES):
            value = value_of(reply, "up" if n % 2 == 0 else "down")
            await rig.fake.wait_ack(await rig.fake.press(reply, FEEDBACK_ACTION, user=ALICE.id, value=value))
            # Handled before the next (bolt runs a press's handler after its ack): the order is the
            # person's, so each press changes the vote.
            await wait_until(lambda: counted() == n + 1, timeout=10)  # noqa: B023
            await clock.sleep(SECONDS / PRESSES)  # a person's pace of pressing, not a wait for the bot
        took = clock.now() - started
        await rig.idle()

        recorded = await votes(redis_client, redis_prefix, answer_id)
        assert {k: v["value"] for k, v in recorded.items()} == {ALICE.id: "down"}  # the last press
        assert sample("chatbot_feedback_total", labels | {"value": "up"}) == 1
        assert sample("chatbot_feedback_total", labels | {"value": "down"}) is None
        assert sample("chatbot_feedback_changes_total", labels | {"value": "down"}) == PRESSES // 2
        assert sample("chatbot_feedback_changes_total", labels | {"value": "up"}) == PRESSES // 2 - 1
        assert len(rig.fake.views) == 1  # one reason form
        # One private reply every 5 s at most (the 👎 that opened the form is answered by it).
        assert 1 <= len(rig.fake.responses) <= took // 5 + 1


class ManualClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds

    def real(self, seconds: float) -> float:
        return 0.0


def test_replies_are_spaced_per_person_and_answer_and_forms_come_once() -> None:
    clock = ManualClock()
    replies = PressReplies(clock, every=5.0)
    assert replies.may_reply("a1", "U1")
    assert not replies.may_reply("a1", "U1")
    assert replies.may_reply("a1", "U2") and replies.may_reply("a2", "U1")  # others are apart
    clock.t += 5.0
    assert replies.may_reply("a1", "U1")
    assert replies.may_ask_reason("a1", "U1")
    assert not replies.may_ask_reason("a1", "U1")
    assert replies.may_ask_reason("a1", "U2")
