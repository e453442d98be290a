"""Logging set-up: readable text or JSON lines, and no secret in any of them.

Redaction happens twice, so that no path around it exists:

1. A log record factory rewrites every record when it is created, whoever creates it
   (our code, slack_sdk, discord.py, httpx, aiohttp): the message is merged with its
   arguments and redacted, and the exception and stack text are formatted and redacted
   too. Every handler sees the clean record, including ones other code adds later.
2. Our own handler's formatter redacts the final line again, which also covers
   `extra=` fields (they are attached after the factory has run).

What is removed: every configured secret value (`register_secrets`; the tokens, the
API key, the signing secret, the Redis password), and anything shaped like a
credential whatever its value: Slack tokens (`xoxb-…`, `xapp-…`), `Bearer …` /
`Bot …` authorization values, Discord bot tokens, passwords in URLs, and
`token=` / `api_key=` / `ticket=` style parameters.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

from bot.ops.tracing import current_trace_id

REDACTED = "[redacted]"

# Secrets shorter than this are not redacted by value: a one- or two-character
# "password" would blank out every word that contains it, and is no secret anyway.
MIN_SECRET_LENGTH = 4

_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Slack tokens: bot, user, app-level, refresh, config.
    (re.compile(r"\bxox[a-z]-[A-Za-z0-9-]+"), REDACTED),
    (re.compile(r"\bxapp-[A-Za-z0-9-]+"), REDACTED),
    # Authorization header values, in any quoting.
    # ("Bot <token>" is left to the header and Discord patterns: "bot" is a common word.)
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1\2{REDACTED}"),
    (
        re.compile(
            r"""(?i)(["']?(?:authorization|x-api-key)["']?\s*[:=]\s*["']?)"""
            r"""(?:(?:bearer|bot|basic)\s+)?[^"'\s,}]+"""
        ),
        rf"\1{REDACTED}",
    ),
    # Discord bot token: base64 user id . timestamp . HMAC.
    (re.compile(r"\b[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}"), REDACTED),
    # user:password@ in any URL (redis://:pw@host, https://u:pw@host).
    (re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@"), rf"\1{REDACTED}@"),
    # key=value / "key": "value" pairs whose key says it is a credential.
    (
        re.compile(
            r"""(?i)(\b(?:token|api_?key|apikey|secret|password|passwd|client_secret|ticket|"""
            r"""signing_secret)["']?\s*[=:]\s*["']?)[^"'\s&,}]+"""
        ),
        rf"\1{REDACTED}",
    ),
)

_lock = threading.Lock()
_secret_pattern: re.Pattern[str] | None = None
_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Add secret values to redact from every log line from now on."""
    global _secret_pattern
    with _lock:
        for value in values:
            if value and len(value) >= MIN_SECRET_LENGTH:
                # The encodings a secret shows up in: as is, in a URL or form body, in JSON.
                _secrets.update(
                    {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
                )
        # Longest first, so a secret that contains another is removed whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None


def clear_secrets() -> None:
    """Forget every registered secret (tests)."""
    global _secret_pattern
    with _lock:
        _secrets.clear()
        _secret_pattern = None


def redact(text: str) -> str:
    """`text` without any registered secret or credential-shaped value."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for shape, replacement in _SHAPES:
        text = shape.sub(replacement, text)
    return text


# ---- the record factory: clean every record where it is made --------------------------

_base_factory = logging.getLogRecordFactory()


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    _redact_record(record)
    return record


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep both parts, redacted, rather than fail
        message = f"{record.msg} {record.args!r}"
    record.msg = redact(message)
    record.args = None
    if record.exc_info and record.exc_info[0] is not None:
        # Formatted once here, so no handler formats the raw exception again.
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


# ---- formatters -----------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class TextFormatter(logging.Formatter):
    """`2025-01-31 12:00:00,123 INFO bot.engine: answered platform=slack outcome=ok …`"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            fields = " ".join(f"{k}={_text_value(v)}" for k, v in extras.items())
            # The fields go on the first line, before any traceback.
            head, sep, tail = line.partition("\n")
            line = f"{head} {fields}{sep}{tail}"
        return redact(line)


def _text_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the `extra=` fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry[key] = value if isinstance(value, int | float | bool | None) else str(value)
        trace_id = current_trace_id()  # the turn's trace, when traces are exported (bot.ops.tracing)
        if trace_id is not None:
            entry["trace_id"] = trace_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # Redact every string before encoding: a secret with a quote or backslash in it
        # would otherwise be escaped into a form the patterns no longer match.
        clean = {k: redact(v) if isinstance(v, str) else v for k, v in entry.items()}
        return json.dumps(clean, ensure_ascii=False)


# ---- set-up ---------------------------------------------------------------------------

# Libraries that log every request at INFO: quiet unless we are debugging.
_CHATTY = ("httpx", "httpcore", "aiohttp.access", "discord.gateway", "discord.client")


class _OurHandler(logging.StreamHandler[TextIO]):
    """Marks the handler `setup_logging` installed, so a second call replaces it."""


def setup_logging(
    level: str = "INFO",
    fmt: str = "text",
    secrets: Iterable[str | None] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Log to `stream` (stderr) at `level` in `fmt` ("text" or "json"), redacting `secrets`.

    Safe to call again (it replaces its own handler); returns the handler it installed.
    """
    register_secrets(secrets)
    logging.setLogRecordFactory(_redacting_factory)

    handler = _OurHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())

    debug = root.level <= logging.DEBUG
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)
    return handler


def redirect_logging(stream: TextIO) -> None:
    """Send the log set up by `setup_logging` to `stream` instead, same level, format and
    redaction (the terminal chat prints it between answers)."""
    ours = [h for h in logging.getLogger().handlers if isinstance(h, _OurHandler)]
    if not ours:
        setup_logging(stream=stream)
    for handler in ours:
        handler.setStream(stream)


def teardown_logging() -> None:
    """Undo `setup_logging` (tests): remove our handler, the factory and the secrets."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    logging.setLogRecordFactory(_base_factory)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET)
    clear_secrets()


# ---- the per-answer line --------------------------------------------------------------

answer_log = logging.getLogger("bot.answer")


def log_answer(
    *,
    platform: str,
    conversation: str,
    persona: str,
    model: str,
    outcome: str,
    tokens_in: int,
    tokens_out: int,
    ttft_s: float | None,
    total_s: float,
    intake_s: float | None = None,
    error: str = "",
    level: int = logging.INFO,
) -> None:
    """The one line per answered turn (fields as `extra`, so JSON gets them as keys).

    `ttft_s` and `total_s` count from the message's arrival; `intake_s` is arrival to
    model request. Absent times are left out rather than logged as null.
    """
    fields: dict[str, Any] = {
        "platform": platform,
        "conversation": conversation,
        "persona": persona or "-",
        "model": model or "-",
        "outcome": outcome,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
    }
    for name, seconds in (("intake_s", intake_s), ("ttft_s", ttft_s), ("total_s", total_s)):
        if seconds is not None:
            fields[name] = round(seconds, 3)
    if error:
        fields["error"] = error
    answer_log.log(level, "answered", extra=fields)
