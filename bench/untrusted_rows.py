"""faults_bench's second table: untrusted files and requests, as an attacker or an unlucky
operator would send them, against the real slack-bolt, the fake Slack and model, and Redis.

For each hostile file: what the person sees and when (the target: within
ATTACHMENT_PARSE_SECONDS + 2 s), how long another conversation's question takes to be answered
while the file is read, against the same question asked when nothing else runs (the target:
within 2x), and the peak resident memory of the bench's process (the bot and the fakes) and the
parse workers together, sampled every 10 ms from a thread (the target: under 256 MB), shown as
"sum (process + workers)".

Runs on the code before the sandbox too (no workers then), for the before/after tables.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from common import table

from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack_state import Message
from tests.support.files import image, pdf_bomb, pdf_inflating, png_of_size
from tests.support.private_redis import PrivateRedis
from tests.support.slack_fixtures import ALICE, BOT, SlackRig, slack_rig

WAIT = 150.0  # seconds: the code before the sandbox took 72 s over one bomb
ANSWER = "Answered."


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PeakRss:
    """The peak RSS of this process (the bot and the fakes), of the parse workers together, and
    of their sum, sampled every 10 ms in a thread (the event loop may be the thing that is stuck)."""

    def __init__(self, rig: SlackRig) -> None:
        self.sandbox = getattr(rig.engine.files, "sandbox", None)  # None: the code before it
        self.process = self.workers = self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            pids = list(self.sandbox.pids) if self.sandbox is not None else []
            process, workers = rss_mb(os.getpid()), sum(rss_mb(p) for p in pids)
            self.process, self.workers = max(self.process, process), max(self.workers, workers)
            self.peak = max(self.peak, process + workers)

    def __str__(self) -> str:
        return f"{self.peak:.0f} MB ({self.process:.0f} + {self.workers:.0f})"

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Finished:
    """When each conversation's answer ended (the engine's outcome hook), by thread ts."""

    def __init__(self, rig: SlackRig) -> None:
        self.at: dict[str, float] = {}
        rig.engine.on_outcome.append(lambda outcome: self.at.__setitem__(
            outcome.conversation.rsplit(":", 1)[-1], time.monotonic()))

    async def wait(self, rig: SlackRig, *messages: Message) -> float:
        await rig.fake.wait_for(lambda: all(m.ts in self.at for m in messages), WAIT)
        return max(self.at[m.ts] for m in messages)


async def share(
    rig: SlackRig, channel: str, files: list[tuple[str, bytes, str]], text: str = "what is in it?",
    edit: Callable[[Any], None] | None = None,
) -> Message:
    uploaded = [rig.fake.add_file(name, data, mime) for name, data, mime in files]
    for file in uploaded:
        if edit is not None:
            edit(file)
    message = rig.fake.user_message(channel, ALICE.id, f"<@{BOT}> {text}", files=uploaded)
    for event in rig.fake.events_for(message):
        await rig.deliver(event)
    return message


async def plain(rig: SlackRig, finished: Finished, channel: str) -> float:
    """A question in a channel of its own (Slack's pace of a message a second per channel would
    otherwise time the pacing), answered: the seconds from the question to the answer's end."""
    channel = f"{channel}{uuid.uuid4().hex[:6].upper()}"
    start = time.monotonic()
    asked = await rig.say(channel, ALICE, f"<@{BOT}> a plain question")
    return await finished.wait(rig, asked) - start


def shown(rig: SlackRig, message: Message, limit: int = 150) -> str:
    text = rig.fake.seen_text(message.channel, message.ts).replace("\n", " ").replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def env_for(server: PrivateRedis, **extra: str) -> dict[str, str]:
    return {"TOGETHER_API_KEY": "bench-key", "REDIS_URL": server.url,
            "REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}", "BOT_MODEL": "bench/model",
            "BOT_VISION": "on", **extra}


async def hostile(server: PrivateRedis, llm: FakeLLM, label: str, files: list[tuple[str, bytes, str]],
                  copies: int = 1) -> dict[str, str]:
    """`copies` messages with `files`, in as many channels, while another channel asks a question."""
    llm.answer = Answer.of(ANSWER)
    async with slack_rig(env_for(server), llm) as rig:
        finished = Finished(rig)
        await plain(rig, finished, "C90")  # warm: connections, the first answer's imports
        quiet = statistics.median([await plain(rig, finished, "C91") for _ in range(3)])
        with PeakRss(rig) as rss:
            start = time.monotonic()
            sent = [await share(rig, f"C{n}", files) for n in range(copies)]
            await asyncio.sleep(0.3)  # the files are being read
            during = statistics.median([await plain(rig, finished, "C92") for _ in range(3)])
            ended = await finished.wait(rig, *sent)
        return {
            "what was sent": label,
            "what the person sees": shown(rig, sent[-1]),
            "time to it": f"{ended - start:.1f} s" + (f" (all {copies})" if copies > 1 else ""),
            "another conversation meanwhile (quiet)": f"{during * 1000:.0f} ms ({quiet * 1000:.0f} ms)",
            "peak RSS, bot + workers": str(rss),
        }


async def screenshots(server: PrivateRedis, llm: FakeLLM, max_body: int | None) -> dict[str, str]:
    """Five 4.3 MB screenshots in one message; with `max_body`, a model API that refuses larger
    bodies (413), then a text-only follow-up in the thread."""
    llm.answer = Answer.of(ANSWER)
    llm.max_body = max_body
    shots = [(f"shot{i}.png", image(1200, 1200, noise=True), "image/png") for i in range(1, 6)]
    async with slack_rig(env_for(server), llm) as rig:
        finished = Finished(rig)
        with PeakRss(rig) as rss:
            start = time.monotonic()
            asked = await share(rig, "C1", shots, "what changed?")
            ended = await finished.wait(rig, asked)
        first = shown(rig, asked)
        bodies = [f"{size / 1e6:.1f}" for size in llm.body_sizes]
        row = {
            "what was sent": "five 4.3 MB screenshots in one message"
            + (f"; the model API refuses bodies over {max_body / 1e6:.0f} MB (413)" if max_body else ""),
            "what the person sees": first,
            "time to it": f"{ended - start:.1f} s",
            "another conversation meanwhile (quiet)": "-",
            "peak RSS, bot + workers": str(rss),
        }
        if max_body:
            requests = len(llm.body_sizes)
            del finished.at[asked.ts]
            await rig.say("C1", ALICE, "and without the pictures?", thread_ts=asked.ts)
            await finished.wait(rig, asked)
            follow_up = rig.fake.bot_replies("C1", asked.ts)[-1].visible
            row["what the person sees"] += (
                f" — {requests} request(s) of {', '.join(bodies)} MB; the text-only follow-up: "
                + ("answered" if ANSWER in follow_up else f"\"{follow_up[:60]}\"")
            )
        else:
            row["what the person sees"] += f" — request bodies: {', '.join(bodies)} MB"
        return row


async def foreign_link(server: PrivateRedis, llm: FakeLLM) -> dict[str, str]:
    """A file whose url_private names a host other than Slack's."""
    llm.answer = Answer.of(ANSWER)
    seen: list[str] = []

    async def serve(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(body=b"bytes from elsewhere", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        async with slack_rig(env_for(server), llm) as rig:
            finished = Finished(rig)
            start = time.monotonic()

            def elsewhere(file: Any) -> None:
                file.url_private = f"http://localhost:{port}/steal/notes.txt"

            asked = await share(rig, "C1", [("notes.txt", b"the real notes", "text/plain")], edit=elsewhere)
            ended = await finished.wait(rig, asked)
            token_sent = any(rig.settings.slack.bot_token and rig.settings.slack.bot_token in h for h in seen)
            return {
                "what was sent": "a file whose url_private names another host",
                "what the person sees": shown(rig, asked)
                + f" — requests to that host: {len(seen)}, bot token sent: {'yes' if token_sent else 'no'}",
                "time to it": f"{ended - start:.1f} s",
                "another conversation meanwhile (quiet)": "-",
                "peak RSS, bot + workers": "-",
            }
    finally:
        await runner.cleanup()


async def run(ten: bool = True) -> None:
    """Every row; `ten=False` leaves out the ten bombs at once (on the code before the sandbox
    they take about 10 x 72 s of CPU, one core at a time)."""
    server = PrivateRedis()
    server.start()
    await server.ready()
    bomb = pdf_bomb()
    steps = [
        lambda llm: hostile(server, llm, f"a {len(bomb) / 1000:.0f} KB PDF: 10 pages sharing one content "
                            "stream of 990 K empty text operators", [("bomb.pdf", bomb, "application/pdf")]),
        lambda llm: hostile(server, llm, "a 69 KB PDF whose stream inflates to 70 MB",
                            [("inflating.pdf", pdf_inflating(), "application/pdf")]),
        lambda llm: hostile(server, llm, "a 0.6 MB PNG of 14,000 × 14,000, one colour",
                            [("wall.png", png_of_size(14_000, 14_000), "image/png")]),
        *([lambda llm: hostile(server, llm, "ten such PDF bombs at once, in ten channels",
                               [("bomb.pdf", bomb, "application/pdf")], copies=10)] if ten else []),
        lambda llm: screenshots(server, llm, None),
        lambda llm: screenshots(server, llm, 1_000_000),
        lambda llm: foreign_link(server, llm),
    ]
    rows = []
    try:
        for step in steps:
            async with FakeLLM() as llm:
                rows.append(await step(llm))
    finally:
        server.kill()
    print(table(rows))
