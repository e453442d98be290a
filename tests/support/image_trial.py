"""Try a built image of the bot as it runs, against the project's fakes; `scripts/image` runs this
after the build.

    python -m tests.support.image_trial docker|podman IMAGE

1. The image's own config: a numeric, non-root user (Kubernetes' `runAsNonRoot` can only verify a
   number), a HEALTHCHECK and a CMD; and it holds exactly the packages of deploy/requirements.lock
   (uv.lock's export, the development lock) that apply to its Python, at their locked versions.
2. Its own `python -m bot check` against the real Redis (TEST_REDIS_URL, default
   redis://127.0.0.1:6379/0, under a key prefix of its own, removed after), the fake model and
   the fake Slack: every check passes.
3. Its CMD (`python -m bot run`) in Slack HTTP mode: `/healthz` and `/readyz` answer 200, the
   HEALTHCHECK command passes, a signed DM event is answered in the fake Slack with the fake
   model's text and counted in `/metrics`, and SIGTERM stops it with status 0.

How it runs the image's commands, by tool: tests/support/image_run.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import redis.asyncio as redis
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_events import SignedSender
from tests.support.helpers import free_port
from tests.support.image_run import ImageConfig, Runner, TrialFailed, once, pick_runner
from tests.support.slack_fixtures import ALICE, SECRET

ROOT = Path(__file__).resolve().parents[2]
RUN_LOG = ROOT / "build" / "image-run.log"
LOCK = ROOT / "deploy" / "requirements.lock"
PROJECT = "chatbot"  # pyproject.toml's name: installed by the Dockerfile from the source
VENV_SEEDS = {"pip", "setuptools"}  # what `python -m venv` puts in every virtualenv
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ANSWER = "Hello from the image."
ANSWERED = 'chatbot_answers_total{outcome="ok",platform="slack"} 1.0'  # in /metrics, after the DM
START_TIMEOUT = 120.0  # seconds from `run` to /healthz answering
REPLY_TIMEOUT = 60.0
STOP_TIMEOUT = 45.0  # SHUTDOWN_GRACE_SECONDS (30 s) and some


# Run by the image's Python: the PEP 508 marker environment, and every installed distribution.
INVENTORY = """
import importlib.metadata, json, os, platform, sys
print(json.dumps({
    "environment": {
        "implementation_name": sys.implementation.name,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
    "installed": {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()},
}))
"""


def locked(text: str, environment: dict[str, str]) -> dict[str, str]:
    """Name -> version of every requirement in a pip requirements file with hashes whose marker
    holds in `environment`."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        if not line[:1].isalpha():  # hashes, comments
            continue
        requirement, _, marker = line.rstrip(" \\").partition(";")
        name, _, version = requirement.strip().partition("==")
        if not marker.strip() or Marker(marker).evaluate(environment):
            pins[canonicalize_name(name)] = version
    return pins


async def verify_lock(runner: Runner) -> str:
    code, out = await once(runner, ["python", "-c", INVENTORY], {})
    if code != 0:
        raise TrialFailed(f"the image's Python could not list its packages: {out.strip()[-300:]}")
    inventory = json.loads(out)
    installed: dict[str, str] = {
        canonicalize_name(name): version for name, version in inventory["installed"].items()
    }
    expected = locked(LOCK.read_text(), inventory["environment"])
    wrong = sorted(f"{name} {installed.get(name, 'missing')} (locked {version})"
                   for name, version in expected.items() if installed.get(name) != version)
    extra = sorted(set(installed) - set(expected) - VENV_SEEDS - {PROJECT})
    differences = wrong + [f"{name} (not locked)" for name in extra]
    if PROJECT not in installed:
        differences.append(f"{PROJECT} missing")
    if differences:
        raise TrialFailed(f"the image's packages differ from {LOCK.name}: {', '.join(differences)}")
    python = inventory["environment"]["python_full_version"]
    return f"exactly the {len(expected)} packages {LOCK.name} locks for its Python {python}, and {PROJECT}"



def settings(llm: FakeLLM, slack: FakeSlack, port: int, prefix: str) -> dict[str, str]:
    """The bot's environment: Slack HTTP mode against the fakes, the real Redis."""
    return {
        "TOGETHER_API_KEY": "image-trial-key",
        "TOGETHER_BASE_URL": llm.url,
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": prefix,
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_API_URL": slack.api_url,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_MODE": "http",
        "SLACK_HOST": "127.0.0.1",
        "SLACK_PORT": str(port),
        "HEALTH_PORT": str(free_port()),  # unused in HTTP mode; never a port another test holds
    }


async def check(runner: Runner, env: Mapping[str, str]) -> None:
    code, out = await once(runner, ["python", "-m", "bot", "check"], env)
    print("".join(f"     | {line}\n" for line in out.splitlines()), end="")
    if code != 0:
        raise TrialFailed(f"the image's `python -m bot check` failed (status {code})")
    print("ok   python -m bot check: every check passed")


async def until_ok(process: asyncio.subprocess.Process, url: str, shows: str = "") -> float:
    """Seconds until `url` answers 200 (with `shows` in its body); fails if `run` exits first."""
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() - started < START_TIMEOUT:
            if process.returncode is not None:
                raise TrialFailed(f"`run` exited with status {process.returncode} before {url} answered")
            try:
                async with session.get(url) as response:
                    if response.status == 200 and shows in await response.text():
                        return time.monotonic() - started
            except (aiohttp.ClientError, TimeoutError):
                pass  # not listening yet
            await asyncio.sleep(0.2)
    raise TrialFailed(f"{url} did not answer 200{f' showing {shows!r}' if shows else ''} "
                      f"within {START_TIMEOUT:.0f} s")


async def probes(runner: Runner, config: ImageConfig, env: Mapping[str, str],
                 process: asyncio.subprocess.Process, base: str) -> None:
    took = await until_ok(process, f"{base}/healthz")
    print(f"ok   {' '.join(config.cmd)}: /healthz answered 200, {took:.1f} s after start")
    await until_ok(process, f"{base}/readyz")
    print("ok   /readyz answered 200: Redis answers and Slack is connected")
    code, out = await once(runner, config.healthcheck, env)
    if code != 0:
        raise TrialFailed(f"the image's HEALTHCHECK failed (status {code}): {out.strip()}")
    print("ok   the image's HEALTHCHECK passed")


async def answer_a_dm(slack: FakeSlack, sender: SignedSender) -> None:
    message = slack.user_message("D0IMAGE", ALICE.id, "hello, image")
    for event in slack.events_for(message):
        reply = await sender.send_event(slack.callback(event))
        if reply.status != 200:
            raise TrialFailed(f"POST /slack/events answered {reply.status}: {reply.body[:200]}")

    def seen() -> str:
        return slack.seen_text(message.channel, message.ts)

    try:
        await slack.wait_for(lambda: seen() == ANSWER, REPLY_TIMEOUT)
    except AssertionError:
        raise TrialFailed(
            f"a DM was not answered within {REPLY_TIMEOUT:.0f} s (the thread reads {seen()!r})"
        ) from None
    print(f"ok   a signed DM event was answered in the fake Slack: {ANSWER!r}")


async def stop(runner: Runner, process: asyncio.subprocess.Process) -> None:
    await runner.terminate(process)
    try:
        status = await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    except TimeoutError:
        raise TrialFailed(f"`run` did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM") from None
    if status != 0:
        raise TrialFailed(f"`run` exited with status {status} on SIGTERM")
    print("ok   SIGTERM: `run` stopped with status 0")


async def serve(runner: Runner, config: ImageConfig, env: Mapping[str, str], slack: FakeSlack,
                port: int) -> None:
    """The image's CMD, probed, asked, counted and stopped."""
    RUN_LOG.parent.mkdir(exist_ok=True)
    process = await runner.start(config.cmd, env, RUN_LOG)
    base = f"http://127.0.0.1:{port}"
    sender = slack.deliver_http_to(f"{base}/slack/events", SECRET)
    try:
        await probes(runner, config, env, process, base)
        await answer_a_dm(slack, sender)
        await until_ok(process, f"{base}/metrics", ANSWERED)
        print(f"ok   /metrics counts it: {ANSWERED}")
        await stop(runner, process)
    except TrialFailed:
        tail = RUN_LOG.read_text(errors="replace").splitlines()[-15:]
        print("".join(f"     | {line}\n" for line in tail) + f"     (`run`'s output: {RUN_LOG})")
        raise
    finally:
        await sender.close()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def forget(prefix: str) -> None:
    client = redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def trial(tool: str, image: str) -> None:
    config = await ImageConfig.of(tool, image)
    print(f"ok   image {image}: {config.verify()}")
    runner = await pick_runner(tool, image, config)
    print(f"note running the image with {runner.how}")
    print(f"ok   the image holds {await verify_lock(runner)}")
    prefix = f"chatbot-image-trial-{secrets.token_hex(4)}"
    try:
        async with FakeLLM() as llm, FakeSlack() as slack:
            llm.answer = Answer.of(ANSWER)
            slack.add_user(dataclasses.replace(ALICE))
            port = free_port()
            env = settings(llm, slack, port, prefix)
            await check(runner, env)
            await serve(runner, config, env, slack, port)
    finally:
        await runner.close()
        await forget(prefix)


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("docker", "podman"):
        print("usage: python -m tests.support.image_trial docker|podman IMAGE", file=sys.stderr)
        return 2
    tool, image = sys.argv[1:]
    try:
        asyncio.run(trial(tool, image))
    except TrialFailed as failure:
        print(f"FAIL {failure}")
        return 1
    print(f"image trial passed: {image} with {tool}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
