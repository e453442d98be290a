"""Command line: `python -m bot run | chat | check | persona | usage`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from bot.config import ConfigError, Settings, load_settings, redact_url, require_model_key
from bot.logs import setup_logging
from bot.surface import Author, ChannelScope
from bot.usage import USAGE_TTL_DAYS

log = logging.getLogger("bot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Chat models in Slack and Discord.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start every platform whose token is set")
    chat = commands.add_parser("chat", help="a conversation in this terminal, through the same core")
    chat.add_argument("--channel", default="console", help="the persona scope (default: console)")
    chat.add_argument("--thread", help="conversation id; the same id continues it (needs REDIS_URL)")
    chat.add_argument("--persona", help="start with this preset (see /persona list)")
    commands.add_parser("check", help="check settings and reach Redis, the model API and platforms")
    persona = commands.add_parser(
        "persona", help="an operator's /persona for any channel, e.g. persona slack:T0123:C0456 use sre"
    )
    persona.add_argument("scope", type=_scope, help="the channel: platform:workspace:channel")
    persona.add_argument("words", nargs="+", help="what follows /persona: show, list, use NAME, set PROMPT…")
    usage = commands.add_parser("usage", help="token usage per day, channel and user")
    usage.add_argument("--days", type=_days, default=7,
                       help=f"how many UTC days back, today included (default 7, at most {USAGE_TTL_DAYS})")
    return parser


def _scope(raw: str) -> ChannelScope:
    parts = raw.split(":")
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not platform:workspace:channel (e.g. slack:T0123:C0456, discord:GUILD:CHANNEL)"
        )
    return ChannelScope(*parts)


async def _persona(settings: Settings, scope: ChannelScope, words: list[str]) -> int:
    from bot.runtime import open_engine

    if not settings.redis_url:
        print("persona needs REDIS_URL: the embedded store keeps nothing between processes.", file=sys.stderr)
        return 2
    operator = Author("operator", "an operator")
    async with open_engine(settings) as engine:
        reply = await engine.command(
            "persona " + " ".join(words), scope=scope, conversation=None, actor=operator, can_admin=True
        )
    print(reply)
    return 0


def _days(raw: str) -> int:
    try:
        days = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if not 1 <= days <= USAGE_TTL_DAYS:
        raise argparse.ArgumentTypeError(f"use 1 to {USAGE_TTL_DAYS} (usage is kept {USAGE_TTL_DAYS} days)")
    return days


def _setup_logging(settings: Settings, command: str) -> None:
    level = settings.log_level
    if command == "chat" and "LOG_LEVEL" not in os.environ:
        level = "WARNING"  # the terminal is the conversation: only problems interrupt it
    setup_logging(level, settings.log_format, secrets=settings.secrets())


async def _chat(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.console import chat
    from bot.runtime import open_engine

    async with open_engine(settings) as engine:
        if args.persona and args.persona.lower() not in engine.presets:
            print(f"There is no preset {args.persona!r}: use one of {', '.join(engine.preset_names())}.",
                  file=sys.stderr)
            return 2
        return await chat(engine, args.channel, args.thread, args.persona)


async def _usage(settings: Settings, days: int) -> int:
    from bot import store
    from bot.usage import Usage

    if not settings.redis_url:
        print("usage needs REDIS_URL: the embedded store keeps nothing between processes.", file=sys.stderr)
        return 2
    client = store.connect(settings)
    try:
        report = await Usage(client, settings.redis_prefix).report(days)
    except Exception as exc:
        print(f"cannot read usage from Redis at {redact_url(settings.redis_url)}: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()
    print(report.table())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        if args.command in ("chat", "run"):
            require_model_key(settings)
    except ConfigError as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        return 2
    _setup_logging(settings, args.command)
    try:
        if args.command == "chat":
            return asyncio.run(_chat(settings, args))
        if args.command == "persona":
            return asyncio.run(_persona(settings, args.scope, args.words))
        if args.command == "usage":
            return asyncio.run(_usage(settings, args.days))
        if args.command == "check":
            from bot.check import run_checks

            return asyncio.run(run_checks(settings))
        from bot.service import serve

        return asyncio.run(serve(settings))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
