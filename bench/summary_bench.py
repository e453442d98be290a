"""Benchmark of a long thread's summary on Slack, per issue 23's targets.

The bot (engine + Slack adapter, in this process, on the wall clock) runs against the fake Slack
and the fake model: a thread of 1,000 messages (~60 tokens each, ~60k tokens), a context of
8,192 tokens (BOT_MAX_TOKENS 1,024 of it the answer's room), the model writing 50 tokens/s (a
part's summary 150 tokens, the combined one 300). "Summarize thread" is pressed on the thread;
measured from that press (CLOCK_MONOTONIC, shared by the fakes):

- first progress: the first status write (assistant.threads.setStatus, or the reaction that
  stands in for it) in the thread;
- complete: the summary's final write;
- longest chain: the longest part request (arrival to last token) plus each combining round's
  longest (the final one included): the least a summary with unbounded parallelism could take;
- history reads: conversations.replies calls, and the most in any 60 s (Slack's Tier 3: 50+).

    python bench/summary_bench.py
    python bench/summary_bench.py --messages 2000 --concurrency 4

Prints a Markdown table. Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

from common import delete_prefix, table

from adapters.slack.summaries import SHORTCUT
from tests.fakes.llm import Answer, FakeLLM, StreamLog
from tests.support.slack_fixtures import ALICE, BOB, slack_rig
from tests.support.summaries import cited

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
RATE = 50.0  # tokens a second
PART_TOKENS, FINAL_TOKENS = 150, 300
FILLER = "we checked the replica lag again and it is still climbing on the east side "


def answer(asked: str) -> Answer:
    """A part's summary of PART_TOKENS tokens, the combined one of FINAL_TOKENS, citing numbers given."""
    numbers = cited(asked) or ["1"]
    size = FINAL_TOKENS if asked.startswith("Part 1:") else PART_TOKENS
    words = [f" [{numbers[i % len(numbers)]}]" if i % 25 == 24 else f" w{i}" for i in range(size)]
    return Answer(tokens=["-", *words[1:]], tokens_per_second=RATE)


def longest_chain(streams: list[StreamLog]) -> tuple[float, int]:
    """The longest part, then each combining round's longest; and the number of rounds."""
    def took(s: StreamLog) -> float:
        return (s.last_token or s.arrived) - s.arrived

    parts = [s for s in streams if not s.last_user_message.startswith("Part ")]
    combining = [s for s in streams if s.last_user_message.startswith("Part ")]
    combines = sorted(combining, key=lambda s: s.arrived)
    rounds: list[list[StreamLog]] = []
    for stream in combines:  # a round starts once the previous one has finished
        if rounds and stream.arrived < max(s.last_token or s.arrived for s in rounds[-1]):
            rounds[-1].append(stream)
        else:
            rounds.append([stream])
    return max(map(took, parts)) + sum(max(map(took, r)) for r in rounds), len(rounds)


async def run(messages: int, concurrency: int) -> list[dict[str, str]]:
    prefix = f"bench-summary-{uuid.uuid4().hex[:8]}"
    env = {
        "TOGETHER_API_KEY": "bench", "REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix,
        "BOT_MODEL": "bench/model", "LOG_LEVEL": "warning",
    }
    async with FakeLLM() as llm:
        llm.script = answer
        async with slack_rig(
            env, llm, BOT_CONTEXT_TOKENS="8192", BOT_MAX_TOKENS="1024", SUMMARY_CONCURRENCY=str(concurrency),
        ) as rig:
            fake = rig.fake
            parent = fake.user_message("C1", ALICE.id, "incident: the east database is lagging")
            for i in range(1, messages):
                who = ALICE if i % 2 else BOB
                fake.user_message("C1", who.id, f"update {i}: {FILLER}{FILLER}"[:175], thread_ts=parent.ts)
            thread_tokens = sum(len(m.text) // 3 + 4 for m in fake.thread("C1", parent.ts))
            pressed = time.monotonic()
            await fake.wait_ack(await fake.push_shortcut(SHORTCUT, parent, user=BOB.id))
            await fake.wait_for(lambda: fake.bot_replies("C1", parent.ts), 600)
            await rig.idle(600)
            signs = ("assistant.threads.setStatus", "reactions.add")
            shown = [c for c in fake.calls if c.method in signs and c.ok]
            writes = [c.at for c in fake.calls if c.method in ("chat.postMessage", "chat.update") and c.ok]
            reads = [c.at for c in fake.calls_to("conversations.replies")]
            chain, rounds = longest_chain(llm.streams)
            complete = max(writes) - pressed
            first = shown[0].at - pressed if shown else float("nan")
            how = f" ({shown[0].method})" if shown else ""
            said = [s.status for s in fake.statuses if s.status]
            busiest = max(sum(1 for t in reads if start <= t < start + 60) for start in reads)
    await delete_prefix(REDIS_URL, prefix)
    return [
        {"measure": "thread", "value": f"{messages:,} messages, ~{thread_tokens:,} tokens", "target": "",
         "met": ""},
        {"measure": "model requests", "value": f"{len(llm.streams)} ({rounds} combining round(s)), "
         f"{concurrency} at once", "target": "", "met": ""},
        {"measure": "first progress visible", "value": f"{first:.2f} s{how}", "target": "≤ 1 s",
         "met": "yes" if first <= 1.0 else "no"},
        {"measure": "progress shown", "value": "; ".join(f"“{s}”" for s in said), "target": "", "met": ""},
        {"measure": "longest chain of model calls", "value": f"{chain:.1f} s", "target": "", "met": ""},
        {"measure": "summary complete", "value": f"{complete:.1f} s ({complete / chain:.2f}× the chain)",
         "target": "≤ 2× the chain", "met": "yes" if complete <= 2 * chain else "no"},
        {"measure": "conversations.replies calls", "value": f"{len(reads)}, at most {busiest} in 60 s",
         "target": "≤ 50 a minute (Tier 3)", "met": "yes" if busiest <= 50 else "no"},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8, help="SUMMARY_CONCURRENCY")
    args = parser.parse_args()
    print(table(asyncio.run(run(args.messages, args.concurrency))))


if __name__ == "__main__":
    main()
