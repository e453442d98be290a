"""Log formats, levels, and redaction of secrets from every record at every level."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot.ops import logs

# Obviously fake values in the shapes the real ones have.
SLACK_BOT = "xoxb-" + "test-1111-2222-abcdef"  # fake, token-shaped (split so no scan mistakes it)
SLACK_APP = "xapp-" + "1-test-3333-abcdef"
SIGNING = "test-signing-secret-0123456789"
API_KEY = "test-together-key-abcdef0123456789"
REDIS_PASSWORD = "test-redis-pass"
DISCORD = "discord-test-token"
DISCORD_SHAPED = "FAKE-discord-token-not-real.FAKExx.fake-fake-fake-fake-fake-fake-fake"  # token-shaped
SECRETS = (SLACK_BOT, SLACK_APP, SIGNING, API_KEY, REDIS_PASSWORD, DISCORD)


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    yield io.StringIO()
    logs.teardown_logging()


def setup(out: io.StringIO, level: str = "DEBUG", fmt: str = "text") -> None:
    logs.setup_logging(level, fmt, secrets=SECRETS, stream=out)


def assert_clean(text: str) -> None:
    for secret in (*SECRETS, DISCORD_SHAPED, "test-redis-pass"):
        assert secret not in text
    # Parts of tokens must not survive either.
    assert "1111-2222" not in text and "3333-abcdef" not in text


def log_everything() -> None:
    """Secrets in messages, arguments, exceptions and stack, from ours and libraries' loggers."""
    logging.getLogger("bot.engine").info("starting with key %s", API_KEY)
    logging.getLogger("slack_sdk.web.base_client").debug(
        "Sending a request - headers: %s", {"Authorization": f"Bearer {SLACK_BOT}"}
    )
    logging.getLogger("slack_bolt.App").debug("socket url wss://x/link/?ticket=abc-123&app_id=A1")
    logging.getLogger("discord.http").debug("headers %r", {"Authorization": f"Bot {DISCORD}"})
    logging.getLogger("discord.gateway").debug("IDENTIFY token=%s", DISCORD_SHAPED)
    logging.getLogger("httpx").debug("POST http://x/?api_key=%s", API_KEY)
    logging.getLogger("redis").warning("connect redis://:%s@redis:6379/0 failed", REDIS_PASSWORD)
    logging.getLogger("bot.adapters").warning("bad app token %s, signing %s", SLACK_APP, SIGNING)
    try:
        raise RuntimeError(f"login failed for {SLACK_BOT} / {DISCORD}")
    except RuntimeError:
        logging.getLogger("bot.engine").exception("crash")
    logging.getLogger("bot.engine").info("where %s", SIGNING, stack_info=True)


def test_text_lines_are_readable_and_hold_no_secret(out: io.StringIO) -> None:
    setup(out)
    log_everything()
    text = out.getvalue()

    assert_clean(text)
    assert "INFO bot.engine: starting with key [redacted]" in text
    assert "Authorization': '[redacted]'" in text
    assert "ticket=[redacted]&app_id=A1" in text
    assert "redis://:[redacted]@redis:6379/0" in text
    assert "RuntimeError: login failed for [redacted] / [redacted]" in text
    assert "Traceback (most recent call last)" in text
    assert "Stack (most recent call last)" in text


def test_json_lines_parse_and_hold_no_secret(out: io.StringIO) -> None:
    setup(out, fmt="json")
    log_everything()
    lines = out.getvalue().splitlines()

    entries = [json.loads(line) for line in lines]
    assert len(entries) == 10
    assert_clean(out.getvalue())
    first = entries[0]
    assert (first["level"], first["logger"]) == ("INFO", "bot.engine")
    assert first["msg"] == "starting with key [redacted]"
    assert first["ts"].endswith("+00:00")
    crash = next(e for e in entries if e["msg"] == "crash")
    assert "RuntimeError: login failed for [redacted]" in crash["exc"]


def test_every_handler_sees_clean_records_not_only_ours(out: io.StringIO) -> None:
    """The record factory cleans records where they are made: a handler someone else adds
    (pytest's caplog, a library's own) never sees the raw values."""
    setup(out)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    other = Keep()
    other.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger().addHandler(other)
    try:
        log_everything()
    finally:
        logging.getLogger().removeHandler(other)

    assert len(seen) == 10
    assert_clean("\n".join(other.format(record) for record in seen))


def test_extra_fields_are_shown_and_redacted(out: io.StringIO) -> None:
    setup(out)
    logging.getLogger("bot.x").info("call", extra={"url": f"redis://:{REDIS_PASSWORD}@h/0"})
    assert "call url=redis://:[redacted]@h/0" in out.getvalue()


def test_level_filters_and_chatty_libraries_are_quiet_at_info(out: io.StringIO) -> None:
    setup(out, level="INFO")
    logging.getLogger("bot.engine").debug("debug detail")
    logging.getLogger("httpx").info("HTTP Request: POST http://x 200 OK")
    logging.getLogger("bot.engine").warning("kept")
    assert out.getvalue().count("\n") == 1
    assert "kept" in out.getvalue()


def test_log_answer_is_one_line_with_every_field(out: io.StringIO) -> None:
    setup(out, level="INFO", fmt="json")
    logs.log_answer(
        platform="slack",
        conversation="slack:T1:C1:1700000000.000100",
        persona="pirate",
        model="test/model",
        outcome="ok",
        tokens_in=120,
        tokens_out=42,
        ttft_s=0.41234,
        total_s=3.2,
    )
    (line,) = out.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["msg"] == "answered"
    assert entry["logger"] == "bot.answer"
    assert {k: entry[k] for k in ("platform", "persona", "outcome", "tokens_in", "ttft_s")} == {
        "platform": "slack",
        "persona": "pirate",
        "outcome": "ok",
        "tokens_in": 120,
        "ttft_s": 0.412,
    }
    assert entry["conversation"] == "slack:T1:C1:1700000000.000100"


def test_setup_twice_keeps_one_handler_and_teardown_restores(out: io.StringIO) -> None:
    setup(out)
    setup(out)
    ours = [h for h in logging.getLogger().handlers if isinstance(h, logs._OurHandler)]
    assert len(ours) == 1
    logs.teardown_logging()
    assert logging.getLogRecordFactory() is logs._base_factory
    assert logs.redact(f"key {API_KEY}") == f"key {API_KEY}"  # secrets forgotten


def test_secrets_too_short_to_redact_safely_are_ignored() -> None:
    logs.register_secrets(["ab", None, ""])
    try:
        assert logs.redact("about a cab") == "about a cab"
    finally:
        logs.clear_secrets()


def test_prose_is_not_mistaken_for_tokens() -> None:
    text = "the bot answered with max_tokens=512 tokens_in=12 from https://slack.com/api/"
    assert logs.redact(text) == text


# ---- real library debug logs ----------------------------------------------------------


@pytest.fixture
async def web_api() -> AsyncIterator[str]:
    """A minimal Slack-like Web API: every method answers ok."""

    async def method(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "channel": "C1", "ts": "1.2"})

    app = web.Application()
    app.router.add_post("/api/{method}", method)
    app.router.add_get("/v1/models", method)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_slack_sdk_and_httpx_debug_logs_hold_no_secret(
    out: io.StringIO, web_api: str
) -> None:
    setup(out)
    slack = AsyncWebClient(token=SLACK_BOT, base_url=f"{web_api}/api/")
    await slack.chat_postMessage(channel="C1", text="hello")
    await slack.apps_connections_open(app_token=SLACK_APP)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        reply = await client.get(f"{web_api}/v1/models", params={"api_key": API_KEY})
        assert reply.status_code == 200

    text = out.getvalue()
    assert "slack_sdk" in text and "chat.postMessage" in text  # the libraries did log
    assert "HTTP Request: GET" in text
    assert_clean(text)
