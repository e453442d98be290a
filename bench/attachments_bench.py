"""Benchmark of attachments: the time they add to intake, and the Redis bytes a turn keeps.

Intake is from the message's arrival to the model request being sent (`Outcome.intake_s`):
with files it includes downloading them over local HTTP, decoding the text and
downscaling the image. Each case runs RUNS times in a fresh conversation on the real
Redis; "added" is its median minus the median of the same message without a file.

    python bench/attachments_bench.py            # needs Redis at REDIS_URL (default localhost)

Prints a Markdown table. Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import statistics
import uuid

import aiohttp
import redis.asyncio as redis
from aiohttp import web
from common import delete_prefix, ms, table
from PIL import Image

from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.contract import Attachment, Author, ConversationKey, FetchFailed, Turn
from tests.fakes.llm import Answer, FakeLLM
from tests.support.surfaces import RecordingSurface

RUNS = 10


def text_file(size: int) -> bytes:
    line = b"2026-12-01T12:00:00Z INFO api request served path=/v1/items status=200 in 12 ms\n"
    return (line * (size // len(line) + 1))[:size]


def photo(target: int) -> bytes:
    """A JPEG of about `target` bytes that compresses like a photo (noise, quality 92)."""
    side = 1000
    while True:
        picture = Image.frombytes("RGB", (side, side * 3 // 4), os.urandom(side * (side * 3 // 4) * 3))
        out = io.BytesIO()
        picture.save(out, "JPEG", quality=92)
        if out.tell() >= target:
            return out.getvalue()
        side = int(side * (target / out.tell()) ** 0.5) + 8


async def serve(files: dict[str, bytes]) -> tuple[web.AppRunner, str]:
    async def download(request: web.Request) -> web.Response:
        return web.Response(body=files[request.match_info["name"]])

    app = web.Application()
    app.router.add_get("/files/{name}", download)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/files/"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    files = {"app.log": text_file(1_000_000), "photo.jpg": photo(4_000_000)}
    runner, base = await serve(files)
    prefix = f"bench-attach-{uuid.uuid4().hex[:8]}"
    async with FakeLLM() as fake, aiohttp.ClientSession() as session:
        fake.answer = Answer.of("ok")

        async def fetch(ref: str, limit: int) -> bytes:
            async with session.get(base + ref) as response:
                data = await response.read()
            if len(data) > limit:
                raise FetchFailed("too large")
            return data

        env = {
            "TOGETHER_API_KEY": "bench", "TOGETHER_BASE_URL": fake.url, "REDIS_URL": args.redis,
            "REDIS_PREFIX": prefix, "BOT_MODEL": "bench/model", "BOT_VISION": "on", "LOG_LEVEL": "warning",
        }
        cases = [
            ("no file", ()),
            ("1 MB text file", (Attachment("app.log", "text/plain", len(files["app.log"]), "app.log"),)),
            ("4 MB image (JPEG, to 1024 px)",
             (Attachment("photo.jpg", "image/jpeg", len(files["photo.jpg"]), "photo.jpg"),)),
        ]
        rows = []
        async with open_engine(load_settings(env, dotenv=False)) as engine:
            client = redis.Redis.from_url(args.redis)
            baseline = 0.0
            for name, attachments in cases:
                intakes, stored, memory = [], [], []
                for run in range(args.runs + 1):  # the first run warms up (imports, pools)
                    conversation = ConversationKey("bench", "W", "C", f"{name}-{run}")
                    turn = Turn(
                        conversation, Author("U1", "Alice"), "what does this show?", message_id=f"m{run}",
                        surface=RecordingSurface(), fetch_file=fetch,
                    )
                    turn = dataclasses.replace(turn, attachments=attachments)
                    engine.files.cache = type(engine.files.cache)()  # every run fetches and scales
                    outcome = await engine.answer(turn)
                    assert outcome.intake_s is not None, outcome
                    if run == 0:
                        continue
                    key = engine.keys.history(conversation)
                    user_entry = (await client.lrange(key, 0, 0))[0]
                    intakes.append(outcome.intake_s)
                    stored.append(len(user_entry))
                    memory.append(await client.memory_usage(key) or 0)
                median = statistics.median(intakes)
                if not attachments:
                    baseline = median
                rows.append({
                    "case": name,
                    "intake ms (p50 / p95)": ms(intakes, 1),
                    "added ms (p50)": f"{(median - baseline) * 1000:.1f}",
                    "user turn in Redis, bytes": f"{statistics.median(stored):,.0f}",
                    "history key MEMORY USAGE, bytes": f"{statistics.median(memory):,.0f}",
                })
            await client.aclose()
    await runner.cleanup()
    await delete_prefix(args.redis, prefix)
    print(f"{args.runs} runs per case; the file sizes: text {len(files['app.log']):,} B, "
          f"image {len(files['photo.jpg']):,} B")
    print(table(rows))


if __name__ == "__main__":
    asyncio.run(main())
