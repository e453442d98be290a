"""Benchmark of Stop (press → model stream cut → final write, N answers streaming), and the
feedback counts of a scripted run on the same stopped answers.

End to end in one process: the real slack-bolt (Socket Mode) and the Slack adapter against the
fake Slack, the engine on the real Redis, the fake model streaming every answer slowly. Each of
N people asks in their own channel; once every answer shows its Stop button, each asker presses
it (all within a few ms). Per answer:

- press → core: the envelope pushed → `Engine.stop` called (Socket Mode, bolt, the ack, the claim)
- press → cut: → the model stream cancelled in the engine
- press → final: → the final chat.update (text so far + "(stopped)", Stop button gone) landed at Slack

A third table: the press reaching another replica (two engines on one Redis, as Slack's HTTP
mode behind a load balancer): N answers stream in one engine, each Stop is pressed on the
other (`Engine.stop` → Redis pub/sub → the streaming engine → its verdict back); press →
verdict back, → stream cut, → final text on the surface.

Then, in the first run, a scripted round of feedback on the N stopped answers: every asker
presses 👍 (every third 👎), presses it again (a redelivery-like repeat), then every fifth
changes their mind; the second table shows the presses sent, the votes kept in Redis
(`python -m bot usage`'s totals) and `chatbot_feedback_total`.

    python bench/stop_bench.py                # 20 answers, 3 runs
    python bench/stop_bench.py --answers 50

Prints a Markdown table (p50 / p95 in ms). Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from common import delete_prefix, ms, table

from adapters.slack.controls import FEEDBACK_ACTION, STOP_ACTION
from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.contract import Author, ConversationKey, SurfaceLimits, Turn
from bot.conversations.feedback import Feedback
from bot.ops import metrics
from bot.ops.outcome import Outcome
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack_state import Message, User
from tests.support.helpers import wait_until
from tests.support.slack_fixtures import SlackRig, slack_rig
from tests.support.surfaces import RecordingSurface

REDIS_URL = "redis://127.0.0.1:6379/0"


def has_stop(message: Message) -> bool:
    return any(
        e.get("action_id") == STOP_ACTION for b in message.blocks or [] for e in b.get("elements") or []
    )


def feedback_value(message: Message, kind: str) -> str:
    for block in message.blocks or []:
        for element in block.get("elements") or []:
            if element.get("type") == "feedback_buttons":
                return str(element["positive_button" if kind == "up" else "negative_button"]["value"])
    raise AssertionError("no feedback buttons")


CHANGES = "chatbot_feedback_changes_total"


async def scripted_feedback(rig: SlackRig, replies: list[Message], people: list[User]) -> dict[str, str]:
    metrics.reset()
    presses = 0
    kept: dict[str, str] = {}  # each asker's last vote: what the store should hold in the end
    for round_ in ("first", "again", "change"):
        for i, (reply, person) in enumerate(zip(replies, people, strict=True)):
            kind = "down" if i % 3 == 0 else "up"
            if round_ == "change":
                if i % 5:
                    continue
                kind = "up" if kind == "down" else "down"
            value = feedback_value(reply, kind)
            envelope = await rig.fake.press(reply, FEEDBACK_ACTION, user=person.id, value=value)
            await rig.fake.wait_ack(envelope)
            presses += 1
            kept[person.id] = kind
    # A repeated press within seconds gets no reply (bot.conversations.presses): wait for the votes instead.
    wanted = (sum(v == "up" for v in kept.values()), sum(v == "down" for v in kept.values()))
    deadline = time.monotonic() + 30
    while True:
        (totals,) = await Feedback(rig.engine.store).totals()
        if (totals.up, totals.down) == wanted or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    await rig.idle()
    sample = metrics.current().registry.get_sample_value
    labels = {"platform": "slack", "persona": totals.persona, "model": totals.model}

    def counted(value: str, name: str = "chatbot_feedback_total") -> str:
        return f"{sample(name, labels | {'value': value}) or 0:.0f}"

    return {
        "presses": str(presses), "votes 👍": str(totals.up), "votes 👎": str(totals.down),
        "👍 share": f"{totals.ratio:.0%}" if totals.ratio is not None else "-",
        "chatbot_feedback_total up / down": f"{counted('up')} / {counted('down')}",
        "chatbot_feedback_changes_total up / down": f"{counted('up', CHANGES)} / {counted('down', CHANGES)}",
        "private replies": str(len(rig.fake.responses)),
        "reason modals opened": str(len(rig.fake.views)),
    }


async def run(answers: int, with_feedback: bool) -> tuple[dict[str, list[float]], dict[str, str] | None]:
    prefix = f"bench-stop-{uuid.uuid4().hex[:8]}"
    env = {"TOGETHER_API_KEY": "bench", "REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix,
           "BOT_MODEL": "bench/model", "MAX_CONCURRENT_REPLIES": "200"}
    figures: dict[str, list[float]] = {"core": [], "cut": [], "final": []}
    counts: dict[str, str] | None = None
    try:
        async with FakeLLM() as llm:
            llm.answer = Answer.words(2000, tokens_per_second=20)  # 100 s: stopped long before
            async with slack_rig(env, llm) as rig:
                outcomes: list[Outcome] = []
                rig.engine.on_outcome.append(outcomes.append)
                people = [rig.fake.add_user(User(f"U{i:04d}", f"person{i}")) for i in range(answers)]
                asked = [
                    await rig.say(f"C{i:04d}", person, f"<@U0BOT> count for me {i}")
                    for i, person in enumerate(people)
                ]

                def replies() -> list[Message] | None:
                    found = [rig.fake.bot_replies(a.channel, a.ts) for a in asked]
                    if all(r and has_stop(r[0]) and " w3" in r[0].visible for r in found):
                        return [r[0] for r in found]
                    return None

                shown: list[Message] = await rig.fake.wait_for(replies, 60)
                pressed_at: dict[str, float] = {}
                for reply, person in zip(shown, people, strict=True):
                    pressed_at[reply.channel] = time.monotonic()
                    await rig.fake.press(reply, STOP_ACTION, user=person.id)
                await rig.fake.wait_for(lambda: len(outcomes) == answers, 30)
                for outcome in outcomes:
                    channel = outcome.scope.rsplit(":", 1)[1]
                    assert outcome.stop_pressed_at and outcome.stream_cut_at and outcome.reply
                    assert outcome.reply.final_at is not None
                    press = pressed_at[channel]
                    figures["core"].append(outcome.stop_pressed_at - press)
                    figures["cut"].append(outcome.stream_cut_at - press)
                    thread = next(a.ts for a in asked if a.channel == channel)
                    (reply,) = rig.fake.bot_replies(channel, thread)
                    final_update = max(
                        c.at for c in rig.fake.calls_to("chat.update") if c.params.get("ts") == reply.ts
                    )
                    figures["final"].append(final_update - press)
                if with_feedback:
                    counts = await scripted_feedback(rig, shown, people)
    finally:
        await delete_prefix(REDIS_URL, prefix)
    return figures, counts


async def across_replicas(answers: int) -> dict[str, list[float]]:
    prefix = f"bench-stop-{uuid.uuid4().hex[:8]}"
    figures: dict[str, list[float]] = {"verdict": [], "cut": [], "final": []}
    try:
        async with FakeLLM() as llm:
            llm.answer = Answer.words(2000, tokens_per_second=20)
            env = {"TOGETHER_API_KEY": "bench", "REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix,
                   "BOT_MODEL": "bench/model", "MAX_CONCURRENT_REPLIES": "200", "TOGETHER_BASE_URL": llm.url}
            settings = load_settings(env, dotenv=False)
            async with open_engine(settings) as streaming, open_engine(settings) as pressed_on:
                await asyncio.wait_for(streaming.remote_stops.listening.wait(), 5)
                limits = SurfaceLimits(max_chars=4000, min_edit_interval=1.0, controls=True)
                surfaces = [RecordingSurface(limits=limits) for _ in range(answers)]
                turns = [
                    Turn(ConversationKey("bench", "W", f"C{i}", "t"), Author(f"U{i}", f"u{i}"), f"count {i}",
                         f"m{i}", surface)
                    for i, surface in enumerate(surfaces)
                ]
                tasks = [streaming.submit(t) for t in turns]
                await wait_until(lambda: all(" w3" in s.text for s in surfaces), timeout=60)

                async def press(turn: Turn) -> tuple[float, float]:
                    at = time.monotonic()
                    verdict = await pressed_on.stop(turn.answer_id, turn.author, can_admin=False)
                    assert verdict.done, verdict
                    return at, time.monotonic()

                presses = await asyncio.gather(*(press(t) for t in turns))
                outcomes = await asyncio.gather(*tasks)
                for (at, answered), outcome in zip(presses, outcomes, strict=True):
                    assert outcome.stream_cut_at and outcome.reply and outcome.reply.final_at
                    figures["verdict"].append(answered - at)
                    figures["cut"].append(outcome.stream_cut_at - at)
                    figures["final"].append(outcome.reply.final_at - at)
    finally:
        await delete_prefix(REDIS_URL, prefix)
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    feedback_rows: list[dict[str, str]] = []
    every: dict[str, list[float]] = {"core": [], "cut": [], "final": []}
    for run_number in range(1, args.runs + 1):
        figures, counts = await run(args.answers, with_feedback=run_number == 1)
        if counts is not None:
            feedback_rows = [counts]
        for key, values in figures.items():
            every[key] += values
        rows.append({
            "run": str(run_number), "answers streaming": str(args.answers),
            "press → core (ms p50 / p95)": ms(figures["core"]),
            "press → stream cut": ms(figures["cut"]),
            "press → final write": ms(figures["final"]),
            "worst final (ms)": f"{max(figures['final']) * 1000:.0f}",
        })
    rows.append({
        "run": "all", "answers streaming": str(args.answers),
        "press → core (ms p50 / p95)": ms(every["core"]),
        "press → stream cut": ms(every["cut"]),
        "press → final write": ms(every["final"]),
        "worst final (ms)": f"{max(every['final']) * 1000:.0f}",
    })
    print(table(rows))
    print()
    remote = await across_replicas(args.answers)
    print(table([{
        "answers streaming (one replica)": str(args.answers),
        "press (other replica) → verdict back, ms p50 / p95": ms(remote["verdict"]),
        "→ stream cut": ms(remote["cut"]),
        "→ final text": ms(remote["final"]),
    }]))
    print()
    print(table(feedback_rows))


if __name__ == "__main__":
    asyncio.run(main())
