"""Command line: `python -m bot run | chat | check`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from bot.config import ConfigError, Settings, load_settings, require_model_key

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
    return parser


def _setup_logging(settings: Settings) -> None:
    try:
        from bot.logs import setup_logging
    except ImportError:  # pragma: no cover - logs module arrives with operations support
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
        logging.basicConfig(level=settings.log_level, format=fmt)
        return
    setup_logging(settings.log_level, settings.log_format, secrets=settings.secrets())


async def _chat(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.console import chat
    from bot.runtime import open_engine

    async with open_engine(settings) as engine:
        if args.persona and args.persona.lower() not in engine.presets:
            print(f"There is no preset {args.persona!r}: use one of {', '.join(engine.preset_names())}.",
                  file=sys.stderr)
            return 2
        return await chat(engine, args.channel, args.thread, args.persona)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        if args.command in ("chat", "run"):
            require_model_key(settings)
    except ConfigError as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        return 2
    _setup_logging(settings)
    try:
        if args.command == "chat":
            return asyncio.run(_chat(settings, args))
        if args.command == "check":
            from bot.check import run_checks

            return asyncio.run(run_checks(settings))
        from bot.service import serve

        return asyncio.run(serve(settings))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
