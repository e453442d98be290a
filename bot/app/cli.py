"""Command line: `python -m bot run | chat | check | persona | usage | forget-workspace`
(`bot/__main__.py` calls `main`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TextIO

from bot.config import (
    TOGETHER,
    ConfigError,
    Settings,
    default_provider,
    load_settings,
    redact_url,
    require_model_key,
)
from bot.contract import Author, ChannelScope
from bot.ops.logs import setup_logging
from bot.ops.usage import USAGE_TTL_DAYS
from bot.platforms import enabled, installed
from bot.platforms import secrets as platform_secrets

log = logging.getLogger("bot")


EXIT_CODES = """exit status: 0 done, 1 a runtime failure (something unreachable, a port in use),
2 a setting to fix (the message names it), 130 interrupted"""


def _prog() -> str:
    """`chatbot` when run as the console script, else `python -m bot`."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name not in ("__main__.py", "-c", "-m") else "python -m bot"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(), description="Chat models in Slack and Discord.", epilog=EXIT_CODES,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="start every platform whose token is set", epilog=EXIT_CODES,
        description="Start Slack and/or Discord (every platform whose token is set) in one process, "
        "with /healthz, /readyz and /metrics, until SIGTERM or Ctrl-C. Settings come from the "
        "environment and .env (see .env.example). A failure to start is one line naming the "
        "setting to fix.",
    )
    run.add_argument("--no-platform", action="store_true",
                     help="start no platform, only the engine and /healthz, /readyz and /metrics on "
                     "HEALTH_PORT (default 8080): to try them locally")
    chat = commands.add_parser(
        "chat", help="a conversation in this terminal, through the same core",
        description="A conversation in this terminal, through the same core, personas and streaming. "
        "Needs TOGETHER_API_KEY (or --fake). Ctrl-C stops an answer, Ctrl-D or a second Ctrl-C quits. "
        "With stdin from a pipe, each line is one message and each answer is printed once complete.",
    )
    chat.add_argument("--channel", default="console", help="the persona scope (default: console)")
    chat.add_argument("--thread", help="conversation id; the same id continues it (needs REDIS_URL)")
    chat.add_argument("--persona", help="start with this preset (see /persona list)")
    chat.add_argument("--fake", action="store_true",
                      help="talk to a local fake model (no API key, no network): it streams one "
                      "Markdown demo answer to every message")
    chat.add_argument("-v", "--verbose", action="store_true",
                      help=f"print the log on stderr (by default it goes to {_state_path('chat.log')}, "
                      "never into the chat)")
    commands.add_parser(
        "check", help="check settings and reach Redis, the model API and platforms", epilog=EXIT_CODES,
        description="Check the settings, then reach Redis, the model API (one 1-token request) and "
        "each enabled platform: one line each (ok or FAIL with what to fix), every check run "
        "whatever the others found. Exits 1 if any failed, 2 if the settings cannot be read.",
    )
    persona = commands.add_parser(
        "persona", help="an operator's /persona for any channel, e.g. persona slack:T0123:C0456 use sre",
        description="Run /persona for any channel as an operator would (admin rights), e.g. "
        "persona slack:T0123:C0456 use sre. Needs REDIS_URL: personas live in Redis, where the "
        "running bot reads them.",
    )
    persona.add_argument("scope", type=_scope, help="the channel: platform:workspace:channel")
    persona.add_argument("words", nargs="+", help="what follows /persona: show, list, use NAME, set PROMPT…")
    usage = commands.add_parser(
        "usage", help="token usage and tool calls per day, channel, user and persona; tool calls per "
        "server; feedback per persona and model",
        description="Token usage and tool calls per UTC day, channel, user and persona, tool calls per "
        "MCP server, and the feedback votes per persona and model, as the running bots counted them. "
        "Needs REDIS_URL: the counts live in Redis.",
    )
    usage.add_argument("--days", type=_days, default=7,
                       help=f"how many UTC days back, today included (default 7, at most {USAGE_TTL_DAYS})")
    forget = commands.add_parser(
        "forget-workspace", help="delete everything kept for one workspace, e.g. forget-workspace T0123",
        description="Delete everything the bot keeps for one workspace: its conversations, personas, "
        "pacing windows, claims, per-channel usage and (Slack multi-workspace mode) its installation "
        "and tokens. Per-person usage is kept by user id and expires after "
        f"{USAGE_TTL_DAYS} days. Needs REDIS_URL.",
    )
    forget.add_argument("workspace", type=_workspace,
                        help="the Slack team id (T…), org id (E…) or Discord guild id")
    forget.add_argument("--platform", type=_platform, default="slack",
                        help="the platform, one of those installed (default: slack)")
    return parser


def _platform(raw: str) -> str:
    names = [p.name for p in installed()]
    if raw not in names:
        raise argparse.ArgumentTypeError(f"invalid choice: {raw!r} (choose from {', '.join(names)})")
    return raw


def _workspace(raw: str) -> str:
    if not raw or ":" in raw or "*" in raw or "?" in raw or "[" in raw or raw != raw.strip():
        raise argparse.ArgumentTypeError(f"{raw!r} is not a workspace id (e.g. T0123ABCD)")
    return raw


def _scope(raw: str) -> ChannelScope:
    parts = raw.split(":")
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not platform:workspace:channel (e.g. slack:T0123:C0456, discord:GUILD:CHANNEL)"
        )
    return ChannelScope(*parts)


async def _persona(settings: Settings, scope: ChannelScope, words: list[str]) -> int:
    from bot.app.runtime import open_engine

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


def _state_path(name: str) -> Path:
    """Where the chat keeps its log and its prompt history (XDG's state directory)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "chatbot" / name


def _chat_log(verbose: bool) -> tuple[TextIO | None, str]:
    """The chat's log stream and where it goes: a file, so no log line lands in the
    conversation; stderr with -v (or where the file cannot be written)."""
    if verbose:
        return None, "stderr"
    path = _state_path("chat.log")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a", buffering=1, encoding="utf-8"), str(path)
    except OSError:
        return None, "stderr"


def _setup_logging(
    settings: Settings, secrets: list[str], command: str, environ: Mapping[str, str],
    stream: TextIO | None = None,
) -> None:
    level = settings.log_level
    if command == "check" and "LOG_LEVEL" not in environ:
        # The report is the output: only problems interrupt it, not the libraries' INFO lines
        # (slack_sdk logs one per client it builds).
        level = "WARNING"
    setup_logging(level, settings.log_format, secrets=secrets, stream=stream)


FAKE_ANSWER = """This is the **fake model** from `tests/fakes/llm.py`: no API key, no network. \
It streams this same answer to every message, so you can try the chat itself:

- `/persona list`, `/persona use pirate`, `/forget`
- **Ctrl-C** stops an answer; **Ctrl-D** quits

Set `TOGETHER_API_KEY` (and drop `--fake`) to talk to a real model."""


def _find_checkout() -> None:
    """Make the checkout's tests/ importable for --fake: `python -m bot` finds it on the path
    (the current directory), the console script (`chatbot`) does not, though an editable
    install runs the checkout's own code."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "tests" / "fakes" / "llm.py").is_file() and str(checkout) not in sys.path:
        sys.path.append(str(checkout))


@contextlib.asynccontextmanager
async def _fake_model() -> AsyncIterator[str]:
    """The tests' fake model server, in this process, on a free port; yields its URL."""
    _find_checkout()
    try:
        from tests.fakes.llm import Answer, FakeLLM
    except ImportError:
        raise ConfigError(
            "--fake needs the repository checkout (tests/fakes/llm.py): run it from the repository, "
            "e.g. ./scripts/bot chat --fake"
        ) from None
    async with FakeLLM() as fake:
        fake.answer = Answer.of(FAKE_ANSWER, chunk=6, tokens_per_second=40)
        yield fake.url


def _notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _chat_store(settings: Settings, thread: str | None) -> Settings:
    """Redis if it answers; else the embedded store, said in one line (not an error per message)."""
    from bot.app.preflight import redis_unreachable

    if settings.redis_url:
        problem = await redis_unreachable(settings, timeout=2.0)
        if problem is None:
            return settings
        _notice(
            f"Redis at {redact_url(settings.redis_url)} is not reachable ({problem}): using the embedded "
            "in-memory store for this chat, nothing is kept. Start Redis there, or unset REDIS_URL."
        )
        settings = dataclasses.replace(settings, redis_url=None)
    else:
        _notice("REDIS_URL is not set: using the embedded in-memory store, nothing is kept after this chat.")
    logging.getLogger("bot.state.store").setLevel(logging.ERROR)  # said above, once, in plain words
    if thread:
        _notice(f"--thread {thread}: without Redis this conversation cannot be continued later.")
    return settings


async def _chat(settings: Settings, args: argparse.Namespace, log: str) -> int:
    from adapters.console import ConsoleAdapter, conversation_for
    from bot.app.preflight import model_problem
    from bot.app.runtime import open_engine
    from bot.model.providers import url_variable

    async with contextlib.AsyncExitStack() as stack:
        if args.fake:
            url = await stack.enter_async_context(_fake_model())
            # Not "fake": the key is redacted from every log line, paths included.
            model = dataclasses.replace(
                settings.model, api_key="no-key-for-the-fake-model", base_url=url, model="fake"
            )
            chain = dataclasses.replace(settings.chain, providers=(), fallback_models=())
            settings = dataclasses.replace(settings, model=model, chain=chain)
            _notice(f"Using the fake model at {url} (no API key, no network).")
        else:
            try:
                base_url, key = require_model_key(settings)
            except ConfigError as error:
                raise ConfigError(f"{error} No key at hand? Try: ./scripts/bot chat --fake") from None
            provider = default_provider(settings)
            problem = await model_problem(base_url, key, 5.0, provider.name if provider else TOGETHER)
            if problem is not None:
                print(problem.line, file=sys.stderr)
                return problem.code
        settings = await _chat_store(settings, args.thread)
        engine = await stack.enter_async_context(open_engine(settings))
        if args.persona and args.persona.lower() not in engine.presets:
            print(f"There is no preset {args.persona!r}: use one of {', '.join(engine.preset_names())}.",
                  file=sys.stderr)
            return 2
        provider = default_provider(settings)
        base_url = provider.base_url if provider else settings.model.base_url
        variable = url_variable(provider.name if provider else TOGETHER)
        console = ConsoleAdapter(
            engine, conversation_for(args.channel, args.thread), persona=args.persona,
            unreachable=f"tried {base_url}/chat/completions: check {variable} and "
            "the network, or try the fake model with --fake",
            history=_state_path("chat-history"), log=log,
        )
        await console.start()
        stack.push_async_callback(console.stop)
        return await console.finished()


async def _usage(settings: Settings, days: int) -> int:
    from bot.conversations import feedback
    from bot.ops.usage import Usage
    from bot.state import store
    from bot.state.redis_store import RedisStore

    if not settings.redis_url:
        print("usage needs REDIS_URL: the embedded store keeps nothing between processes.", file=sys.stderr)
        return 2
    client = await store.connect(settings)
    try:
        report = await Usage(client, settings.redis_prefix).report(days)
        votes = await feedback.Feedback(RedisStore(client, settings.redis_prefix)).totals()
    except Exception as exc:
        print(f"cannot read usage from Redis at {redact_url(settings.redis_url)}: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()
    print(report.table())
    print()
    print(feedback.table(votes))
    return 0


async def _forget_workspace(settings: Settings, platform: str, workspace: str) -> int:
    from bot.state import store
    from bot.state.keys import Keys
    from bot.state.workspaces import forget_workspace

    if not settings.redis_url:
        print("forget-workspace needs REDIS_URL: the embedded store keeps nothing between processes.",
              file=sys.stderr)
        return 2
    client = await store.connect(settings)
    try:
        gone = await forget_workspace(client, Keys(settings.redis_prefix), platform, workspace)
    except Exception as exc:
        where = redact_url(settings.redis_url)
        print(f"cannot forget {workspace} in Redis at {where}: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()
    print(f"forgot {platform} workspace {workspace}: {gone.keys} keys deleted "
          f"({gone.installations} installations), {gone.usage_fields} channel usage counts")
    return 0


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; its exit status. Settings come from `environ` if given (and no `.env`
    is read: the tests run the command line in-process with only the settings they set),
    else from the process environment over `.env`."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(environ)
        if args.command == "run":
            require_model_key(settings)
        platforms = enabled(settings)  # the plug-ins' own settings (bot.platforms) read as well
    except ConfigError as error:
        if args.command == "check":
            print(f"FAIL settings: {error}")
        else:
            print(f"Configuration error: {error}", file=sys.stderr)
        return 2
    stream, log = _chat_log(args.verbose) if args.command == "chat" else (None, "stderr")
    secrets = platform_secrets(settings, platforms)
    _setup_logging(settings, secrets, args.command, os.environ if environ is None else environ, stream)
    try:
        if args.command == "chat":
            try:
                return asyncio.run(_chat(settings, args, log))
            except ConfigError as error:
                print(f"Configuration error: {error}", file=sys.stderr)
                return 2
        if args.command == "persona":
            return asyncio.run(_persona(settings, args.scope, args.words))
        if args.command == "usage":
            return asyncio.run(_usage(settings, args.days))
        if args.command == "forget-workspace":
            return asyncio.run(_forget_workspace(settings, args.platform, args.workspace))
        if args.command == "check":
            from bot.app.check import run_checks

            return asyncio.run(run_checks(settings))
        from bot.app.service import serve

        return asyncio.run(serve(settings, platforms=not args.no_platform))
    except KeyboardInterrupt:
        return 130

