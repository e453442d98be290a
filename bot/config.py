"""Every setting, read once from the environment and `.env`, validated with clear errors.

Each setting's environment name appears here exactly once as a string literal,
and in `.env.example` with a comment; `tests/core/test_config.py` keeps the two in step.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values

from bot.tools.config import ServerSpec, ToolConfigError
from bot.tools.config import load as load_tool_servers

T = TypeVar("T")

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a team chat. Answer clearly and concisely, "
    "use Markdown where it helps, and say so when you are not sure."
)


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


@dataclass(frozen=True)
class ModelSettings:
    api_key: str | None
    base_url: str = "https://api.together.ai/v1"
    model: str = "Qwen/Qwen3.5-9B"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    temperature: float | None = None
    max_tokens: int = 1024
    context_tokens: int = 32768
    connect_timeout: float = 10.0
    first_token_timeout: float = 30.0  # one attempt's wait for its first token
    first_token_budget: float = 60.0  # the question's wait for a first token, every attempt together
    idle_timeout: float = 30.0
    max_retries: int = 3
    retry_base_delay: float = 0.5
    reasoning: bool = False  # hybrid models think first unless told not to; personas may turn it on
    request_max_bytes: int = 8_000_000  # one request's body; images are shrunk or left out to fit


@dataclass(frozen=True)
class ProviderSettings:
    """An OpenAI-compatible provider besides Together: `PROVIDER_<NAME>_BASE_URL` and `_API_KEY`."""

    name: str  # lower case, as a model names it: `openrouter:qwen/qwen3-8b`
    base_url: str
    api_key: str | None = None


@dataclass(frozen=True)
class ChainSettings:
    """The models tried after the first (bot/model/fallback.py) and the breaker that skips dead ones
    (bot/model/model_breaker.py); docs/operations.md "Models and providers"."""

    providers: tuple[ProviderSettings, ...] = ()
    fallback_models: tuple[str, ...] = ()  # BOT_FALLBACK_MODELS: the chain after a persona's model
    breaker_failures: int = 3  # failures of one model within the window that open its breaker
    breaker_window: float = 60.0  # seconds
    breaker_open: float = 30.0  # seconds a model is skipped before one request probes it


@dataclass(frozen=True)
class TraceSettings:
    """OpenTelemetry's standard variables (bot/ops/tracing.py); no endpoint, no tracing."""

    endpoint: str | None = None  # OTLP/HTTP traces URL, `/v1/traces` included
    headers: str | None = None  # OTEL_EXPORTER_OTLP_HEADERS: `key=value,…` (an observability vendor's key)
    service_name: str = "chatbot"
    capture_content: bool = False  # message text on the model spans

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None


@dataclass(frozen=True)
class AttachmentSettings:
    """What the bot reads of the files on a message (bot/files/attachments.py, README "Files and images")."""

    max_files: int = 5  # files read per message; the rest are named as left out
    max_file_bytes: int = 20_000_000  # largest file fetched
    max_message_bytes: int = 50_000_000  # all the files of one message together
    max_text_chars: int = 60_000  # text kept from one message's files (what the history stores)
    image_max_side: int = 1024  # pixels: images are downscaled to fit before they go to the model
    fetch_timeout: float = 20.0  # seconds per file
    # The sandbox that parses PDFs and images (bot/files/sandbox.py): per file, and workers at once.
    parse_seconds: float = 5.0
    parse_memory_mb: int = 128
    parse_workers: int = 1  # with the bot, within a 256 Mi pod (docs/operations.md)
    vision: str = "auto"  # "auto" (known vision models) | "on" | "off": the default of /persona vision
    vision_models: frozenset[str] = frozenset()  # more model names that take images, for "auto"


@dataclass(frozen=True)
class SlackSettings:
    bot_token: str | None = None
    app_token: str | None = None
    signing_secret: str | None = None
    mode: str = "socket"  # "socket" | "http"
    host: str = "0.0.0.0"  # every interface: what a container behind a Service needs
    port: int = 3000
    api_url: str | None = None
    streaming: str = "update"  # "update" | "native"
    progress: str = "parts"  # "parts" | "single": one message per answer whatever the load
    allow_bots: bool = False
    # Multi-workspace mode (the OAuth install flow, docs/slack.md "Distribute the app").
    client_id: str | None = None
    client_secret: str | None = None
    state_secret: str | None = None
    token_encryption_key: str | None = None

    @property
    def multi_workspace(self) -> bool:
        """Installed by each workspace through OAuth, tokens in Redis (else one SLACK_BOT_TOKEN)."""
        return bool(self.client_id and self.client_secret)

    @property
    def enabled(self) -> bool:
        return bool(self.bot_token) or self.multi_workspace


@dataclass(frozen=True)
class ToolSettings:
    """MCP tools (bot/tools/, docs/tools.md)."""

    config_path: str | None = None  # MCP_CONFIG: the operator's servers, `mcpServers` JSON
    servers: tuple[ServerSpec, ...] = ()  # read from it at start (a bad file stops the bot)
    default: str = "off"  # BOT_TOOLS: servers a channel with no /persona tools may use: "off", "all", names
    max_steps: int = 8  # TOOL_MAX_STEPS: rounds of tool calls in one answer
    result_max_chars: int = 16_000  # TOOL_RESULT_MAX_CHARS: one result, cut beyond with a note
    turn_seconds: float = 300.0  # TOOL_TURN_SECONDS: all of one answer's tool calls together
    approval_timeout: float = 300.0  # TOOL_APPROVAL_TIMEOUT: no press within it is a Deny


@dataclass(frozen=True)
class DiscordSettings:
    bot_token: str | None = None
    api_url: str | None = None
    gateway_url: str | None = None
    threads: bool = False
    allow_bots: bool = False
    guild_id: str | None = None
    # None and None: every shard of the count Discord recommends, in this process.
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None  # this process's shards (None: all of shard_count)

    @property
    def enabled(self) -> bool:
        return bool(self.bot_token)


@dataclass(frozen=True)
class SummarySettings:
    """Summaries of a thread or a channel (bot/conversations/summarizing.py)."""

    max_messages: int = 2000  # the latest so many are read; the summary says how many were not
    max_requests: int = 40  # model requests per summary; beyond it the oldest parts are left out
    concurrency: int = 8  # parts summarised at once, per summary
    part_tokens: int = 400  # the room of a part's summary (the final one has BOT_MAX_TOKENS)
    progress_interval: float = 2.0  # seconds between progress updates ("Read 600 of 1,200…")


@dataclass(frozen=True)
class Settings:
    model: ModelSettings
    slack: SlackSettings = field(default_factory=SlackSettings)
    discord: DiscordSettings = field(default_factory=DiscordSettings)
    attachments: AttachmentSettings = field(default_factory=AttachmentSettings)
    chain: ChainSettings = field(default_factory=ChainSettings)
    traces: TraceSettings = field(default_factory=TraceSettings)
    summaries: SummarySettings = field(default_factory=SummarySettings)
    tools: ToolSettings = field(default_factory=ToolSettings)
    redis_url: str | None = None
    redis_prefix: str = "chatbot"
    redis_cluster: bool | None = None  # None: asked of the server at start (`INFO cluster`)
    redis_sentinels: tuple[tuple[str, int], ...] = ()  # with them, the master comes from Sentinel
    redis_sentinel_master: str | None = None
    history_ttl: int = 7 * 24 * 3600
    history_max_turns: int = 200
    max_concurrent_replies: int = 64
    persona_admins: frozenset[str] = frozenset()
    persona_open: bool = False
    health_port: int = 8080
    log_level: str = "INFO"
    log_format: str = "text"  # "text" | "json"
    shutdown_grace_seconds: float = 30.0
    user_messages_per_minute: int = 0  # 0 = no limit
    channel_daily_tokens: int = 0  # 0 = no limit
    max_input_chars: int = 8000
    allowed_channels: frozenset[str] = frozenset()  # empty = every channel
    blocked_users: frozenset[str] = frozenset()
    # Every variable as read (the environment over `.env`, empty values dropped), for a plug-in
    # platform that reads its own settings (`bot.contract.platform`); secrets among them, so
    # never in a repr.
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False, hash=False)

    def bots_allowed(self, platform: str) -> bool:
        """Whether messages from other bots on `platform` are answered (SLACK_ALLOW_BOTS, …)."""
        platforms = {"slack": self.slack.allow_bots, "discord": self.discord.allow_bots}
        return platforms.get(platform, False)

    def secrets(self) -> list[str]:
        """Every secret value in force, for log redaction."""
        values = [
            self.model.api_key,
            self.slack.bot_token,
            self.slack.app_token,
            self.slack.signing_secret,
            self.slack.client_secret,
            self.slack.state_secret,
            self.slack.token_encryption_key,
            self.discord.bot_token,
            *(p.api_key for p in self.chain.providers),
            self.traces.headers,
            *(v for spec in self.tools.servers for v in (*spec.env.values(), *spec.headers.values())),
            urlsplit(self.redis_url).password if self.redis_url else None,
        ]
        return [v for v in values if v]


def _sentinels(text: str | None) -> tuple[tuple[str, int], ...]:
    """`REDIS_SENTINELS=host:port,host:port` as (host, port) pairs."""
    pairs: list[tuple[str, int]] = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"REDIS_SENTINELS has {item.strip()!r}: list the sentinels as host:port, comma "
                "separated (e.g. sentinel-0:26379,sentinel-1:26379)."
            )
        pairs.append((host, int(port)))
    return tuple(pairs)


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class Reader:  # method names avoid the builtins they return
    """Typed access to the raw variables, a clear error per bad value; a plug-in platform reads its
    own settings with it, `Reader(settings.env)`, and its errors read like the core's."""

    def __init__(self, env: Mapping[str, str]) -> None:
        # A variable set to the empty string counts as unset (.env.example says so).
        self.env = {k: v.strip() for k, v in env.items() if v is not None and v.strip() != ""}

    def text(self, name: str, default: str | None = None) -> str | None:
        return self.env.get(name, default)

    def _parse(self, name: str, default: T, parse: Callable[[str], T], expected: str) -> T:
        raw = self.env.get(name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not valid: expected {expected}.") from None

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        value = self._parse(name, default, int, "a whole number")
        if value < minimum:
            raise ConfigError(f"{name}={value} is too small: use {minimum} or more.")
        return value

    def optional_integer(self, name: str, minimum: int) -> int | None:
        if name not in self.env:
            return None
        return self.integer(name, minimum, minimum)

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        value = self._parse(name, default, float, "a number")
        if value < minimum:
            raise ConfigError(f"{name}={value} is too small: use {minimum} or more.")
        return value

    def optional_number(self, name: str, low: float, high: float) -> float | None:
        value = self._parse(name, None, float, "a number")
        if value is not None and not low <= value <= high:
            raise ConfigError(f"{name}={value} is out of range: use {low} to {high}.")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        raw = self.env.get(name)
        if raw is None:
            return default
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name}={raw!r} is not valid: use true or false.")

    def optional_flag(self, name: str) -> bool | None:
        """True or false when set, None when not (the default is decided later)."""
        return None if self.env.get(name) is None else self.flag(name)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = str(self.env.get(name, default)).lower()
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is not valid: use one of {', '.join(choices)}.")
        return value

    def names(self, name: str) -> frozenset[str]:
        return frozenset(p.strip() for p in self.env.get(name, "").split(",") if p.strip())

    def url(self, name: str, default: str | None = None, *, websocket: bool = True) -> str | None:
        value = self.env.get(name, default)
        schemes = {"http", "https", "ws", "wss"} if websocket else {"http", "https"}
        if value is not None and urlsplit(value).scheme not in schemes:
            starts = "http(s):// or ws(s)://" if websocket else "http:// or https://"
            raise ConfigError(f"{name}={value!r} is not a URL it can use: it must start with {starts}.")
        return value


def parse_shard_ids(raw: str) -> tuple[int, ...]:
    """`0,3`, `0-3` or both (`0-2,5`): the shard ids, sorted; ValueError when malformed."""
    ids: set[int] = set()
    for part in raw.split(","):
        first, dash, last = part.strip().partition("-")
        low = int(first)
        high = int(last) if dash else low
        if low < 0 or high < low:
            raise ValueError(part)
        ids.update(range(low, high + 1))
    return tuple(sorted(ids))


def shards(count: int | None, ids_raw: str | None) -> tuple[int | None, tuple[int, ...] | None]:
    """DISCORD_SHARD_COUNT and DISCORD_SHARD_IDS, checked together (docs/discord.md#sharding)."""
    if ids_raw is None:
        return count, None
    try:
        ids = parse_shard_ids(ids_raw)
    except ValueError:
        raise ConfigError(
            f"DISCORD_SHARD_IDS={ids_raw!r} is not valid: expected shard numbers such as 0,3 or "
            "a range such as 0-3 (or both: 0-2,5)."
        ) from None
    if count is None:
        raise ConfigError(
            f"DISCORD_SHARD_IDS={ids_raw} needs DISCORD_SHARD_COUNT: the bot's total number of "
            "shards, the same in every process."
        )
    too_high = [i for i in ids if i >= count]
    if too_high:
        raise ConfigError(
            f"DISCORD_SHARD_IDS={ids_raw} names shard {too_high[0]}, but DISCORD_SHARD_COUNT={count} "
            f"numbers the shards 0 to {count - 1}."
        )
    return count, ids


def environment(dotenv: bool = True) -> dict[str, str]:
    """The process environment over `.env` (when `dotenv`): where the settings are read."""
    merged: dict[str, str] = {}
    if dotenv:
        merged.update({k: v for k, v in dotenv_values(".env").items() if v is not None})
    merged.update(os.environ)
    return merged


def load_settings(env: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Read settings from `env` (default: the process environment over `.env`)."""
    r = Reader(environment(dotenv) if env is None else env)

    model = ModelSettings(
        api_key=r.text("TOGETHER_API_KEY"),
        base_url=(r.url("TOGETHER_BASE_URL", websocket=False) or ModelSettings.base_url).rstrip("/"),
        model=r.text("BOT_MODEL") or ModelSettings.model,
        system_prompt=r.text("BOT_SYSTEM_PROMPT") or DEFAULT_SYSTEM_PROMPT,
        temperature=r.optional_number("BOT_TEMPERATURE", 0.0, 2.0),
        max_tokens=r.integer("BOT_MAX_TOKENS", ModelSettings.max_tokens, minimum=1),
        context_tokens=r.integer("BOT_CONTEXT_TOKENS", ModelSettings.context_tokens, minimum=256),
        connect_timeout=r.number("LLM_CONNECT_TIMEOUT", ModelSettings.connect_timeout, 0.1),
        first_token_timeout=r.number("LLM_FIRST_TOKEN_TIMEOUT", ModelSettings.first_token_timeout, 0.1),
        idle_timeout=r.number("LLM_IDLE_TIMEOUT", ModelSettings.idle_timeout, 0.1),
        max_retries=r.integer("LLM_MAX_RETRIES", ModelSettings.max_retries),
        retry_base_delay=r.number("LLM_RETRY_BASE_DELAY", ModelSettings.retry_base_delay),
        first_token_budget=r.number(
            "MODEL_FIRST_TOKEN_TIMEOUT", ModelSettings.first_token_budget, minimum=1.0
        ),
        reasoning=r.choice("BOT_REASONING", "off", ("off", "on")) == "on",
        request_max_bytes=r.integer("MODEL_REQUEST_MAX_BYTES", ModelSettings.request_max_bytes, 100_000),
    )
    if model.max_tokens >= model.context_tokens:
        raise ConfigError(
            f"BOT_MAX_TOKENS={model.max_tokens} leaves no room for the conversation in "
            f"BOT_CONTEXT_TOKENS={model.context_tokens}: lower the first or raise the second."
        )

    app_token = r.text("SLACK_APP_TOKEN")
    slack = SlackSettings(
        bot_token=r.text("SLACK_BOT_TOKEN"),
        app_token=app_token,
        signing_secret=r.text("SLACK_SIGNING_SECRET"),
        mode=r.choice("SLACK_MODE", "socket" if app_token else "http", ("socket", "http")),
        host=r.text("SLACK_HOST") or SlackSettings.host,
        port=r.integer("SLACK_PORT", 3000, minimum=1),
        api_url=r.url("SLACK_API_URL"),
        streaming=r.choice("SLACK_STREAMING", "update", ("update", "native")),
        progress=r.choice("SLACK_PROGRESS", "parts", ("parts", "single")),
        allow_bots=r.flag("SLACK_ALLOW_BOTS"),
        client_id=r.text("SLACK_CLIENT_ID"),
        client_secret=r.text("SLACK_CLIENT_SECRET"),
        state_secret=r.text("SLACK_STATE_SECRET"),
        token_encryption_key=r.text("SLACK_TOKEN_ENCRYPTION_KEY"),
    )
    _check_multi_workspace(slack)
    if slack.enabled:
        if slack.mode == "socket" and not slack.app_token:
            raise ConfigError(
                "SLACK_MODE=socket needs SLACK_APP_TOKEN (an xapp- token with connections:write)."
            )
        if slack.mode == "http" and not slack.signing_secret:
            raise ConfigError(
                "Slack HTTP mode needs SLACK_SIGNING_SECRET (Basic Information page of the app), "
                "or set SLACK_APP_TOKEN to use Socket Mode."
            )

    shard_count, shard_ids = shards(
        r.optional_integer("DISCORD_SHARD_COUNT", minimum=1), r.text("DISCORD_SHARD_IDS")
    )
    discord = DiscordSettings(
        bot_token=r.text("DISCORD_BOT_TOKEN"),
        api_url=r.url("DISCORD_API_URL"),
        gateway_url=r.url("DISCORD_GATEWAY_URL"),
        threads=r.flag("DISCORD_THREADS"),
        allow_bots=r.flag("DISCORD_ALLOW_BOTS"),
        guild_id=r.text("DISCORD_GUILD_ID"),
        shard_count=shard_count,
        shard_ids=shard_ids,
    )

    a = AttachmentSettings
    attachments = AttachmentSettings(
        max_files=r.integer("ATTACHMENT_MAX_FILES", a.max_files),
        max_file_bytes=r.integer("ATTACHMENT_MAX_FILE_BYTES", a.max_file_bytes, minimum=1),
        max_message_bytes=r.integer("ATTACHMENT_MAX_MESSAGE_BYTES", a.max_message_bytes, minimum=1),
        max_text_chars=r.integer("ATTACHMENT_MAX_TEXT_CHARS", a.max_text_chars),
        image_max_side=r.integer("ATTACHMENT_IMAGE_MAX_SIDE", a.image_max_side, minimum=16),
        fetch_timeout=r.number("ATTACHMENT_FETCH_TIMEOUT", a.fetch_timeout, minimum=0.1),
        parse_seconds=r.number("ATTACHMENT_PARSE_SECONDS", a.parse_seconds, minimum=0.5),
        parse_memory_mb=r.integer("ATTACHMENT_PARSE_MEMORY_MB", a.parse_memory_mb, minimum=96),
        parse_workers=r.integer("ATTACHMENT_PARSE_WORKERS", a.parse_workers, minimum=1),
        vision=r.choice("BOT_VISION", a.vision, ("auto", "on", "off")),
        vision_models=r.names("VISION_MODELS"),
    )

    chain = ChainSettings(
        providers=_providers(r),
        fallback_models=model_list(r.text("BOT_FALLBACK_MODELS") or ""),
        breaker_failures=r.integer("MODEL_BREAKER_FAILURES", ChainSettings.breaker_failures, minimum=1),
        breaker_window=r.number("MODEL_BREAKER_WINDOW", ChainSettings.breaker_window, minimum=1.0),
        breaker_open=r.number("MODEL_BREAKER_OPEN_SECONDS", ChainSettings.breaker_open, minimum=1.0),
    )
    _check_models(chain, model.model)
    traces = _traces(r)

    redis_url = r.text("REDIS_URL")
    sentinels = _sentinels(r.text("REDIS_SENTINELS"))
    sentinel_master = r.text("REDIS_SENTINEL_MASTER")
    if sentinels and not sentinel_master:
        raise ConfigError(
            "REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not: name the master the "
            "sentinels watch (the name in `sentinel monitor <name> …`, often mymaster)."
        )
    if sentinels and redis_url is None:
        redis_url = f"redis://{sentinel_master}/0"  # the host is replaced by the master Sentinel names
    cluster = r.optional_flag("REDIS_CLUSTER")
    if sentinels and cluster:
        raise ConfigError("REDIS_CLUSTER and REDIS_SENTINELS are both set: a Redis Cluster fails over "
                          "by itself, Sentinel is for a plain master and its replicas; keep one.")
    if redis_url is not None and urlsplit(redis_url).scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(
            f"REDIS_URL={redact_url(redis_url)!r} is not a Redis URL: "
            "use redis://host:6379/0 (or rediss:// for TLS)."
        )

    return Settings(
        model=model,
        slack=slack,
        discord=discord,
        attachments=attachments,
        chain=chain,
        traces=traces,
        summaries=SummarySettings(
            max_messages=r.integer("SUMMARY_MAX_MESSAGES", SummarySettings.max_messages, minimum=1),
            max_requests=r.integer("SUMMARY_MAX_REQUESTS", SummarySettings.max_requests, minimum=2),
            concurrency=r.integer("SUMMARY_CONCURRENCY", SummarySettings.concurrency, minimum=1),
            part_tokens=r.integer("SUMMARY_PART_TOKENS", SummarySettings.part_tokens, minimum=50),
            progress_interval=r.number("SUMMARY_PROGRESS_INTERVAL", SummarySettings.progress_interval),
        ),
        tools=ToolSettings(
            config_path=r.text("MCP_CONFIG"),
            servers=_tool_servers(r),
            default=(r.text("BOT_TOOLS") or "off").strip().lower(),
            max_steps=r.integer("TOOL_MAX_STEPS", ToolSettings.max_steps, minimum=1),
            result_max_chars=r.integer("TOOL_RESULT_MAX_CHARS", ToolSettings.result_max_chars, minimum=500),
            turn_seconds=r.number("TOOL_TURN_SECONDS", ToolSettings.turn_seconds, minimum=1.0),
            approval_timeout=r.number("TOOL_APPROVAL_TIMEOUT", ToolSettings.approval_timeout, minimum=1.0),
        ),
        redis_url=redis_url,
        redis_prefix=r.text("REDIS_PREFIX") or "chatbot",
        redis_cluster=cluster,
        redis_sentinels=sentinels,
        redis_sentinel_master=sentinel_master,
        history_ttl=r.integer("HISTORY_TTL", Settings.history_ttl, minimum=60),
        history_max_turns=r.integer("HISTORY_MAX_TURNS", Settings.history_max_turns, minimum=2),
        max_concurrent_replies=r.integer("MAX_CONCURRENT_REPLIES", 64, minimum=1),
        persona_admins=r.names("PERSONA_ADMINS"),
        persona_open=r.flag("PERSONA_OPEN"),
        health_port=r.integer("HEALTH_PORT", Settings.health_port, minimum=1),
        log_level=r.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper(),
        log_format=r.choice("LOG_FORMAT", "text", ("text", "json")),
        shutdown_grace_seconds=r.number("SHUTDOWN_GRACE_SECONDS", 30.0),
        user_messages_per_minute=r.integer("USER_MESSAGES_PER_MINUTE", 0),
        channel_daily_tokens=r.integer("CHANNEL_DAILY_TOKENS", 0),
        max_input_chars=r.integer("MAX_INPUT_CHARS", Settings.max_input_chars, minimum=1),
        allowed_channels=r.names("ALLOWED_CHANNELS"),
        blocked_users=r.names("BLOCKED_USERS"),
        env=r.env,
    )


def _tool_servers(r: Reader) -> tuple[ServerSpec, ...]:
    path = r.text("MCP_CONFIG")
    if not path:
        return ()
    try:
        return tuple(load_tool_servers(path, r.env))
    except ToolConfigError as error:
        raise ConfigError(f"{error}: fix the file or unset MCP_CONFIG (docs/tools.md).") from None


_PROVIDER_URL = re.compile(r"^PROVIDER_([A-Z0-9_]+)_BASE_URL$")
TOGETHER = "together"  # the provider of a model named without a prefix


def _providers(r: Reader) -> tuple[ProviderSettings, ...]:
    """Every `PROVIDER_<NAME>_BASE_URL` (with its `PROVIDER_<NAME>_API_KEY`), sorted by name."""
    found: list[ProviderSettings] = []
    for name in sorted(r.env):
        matched = _PROVIDER_URL.match(name)
        if not matched:
            continue
        upper = matched.group(1)
        if upper.lower() == TOGETHER:
            raise ConfigError(f"{name}: Together is the built-in provider; set TOGETHER_BASE_URL instead.")
        url = r.url(name, websocket=False)
        assert url is not None
        found.append(ProviderSettings(upper.lower(), url.rstrip("/"), r.env.get(f"PROVIDER_{upper}_API_KEY")))
    known = {p.name for p in found}
    for name in r.env:
        if name.startswith("PROVIDER_") and name.endswith("_API_KEY") and name[9:-8].lower() not in known:
            raise ConfigError(f"{name} is set but PROVIDER_{name[9:-8]}_BASE_URL is not: set both.")
    return tuple(found)


def model_list(text: str) -> tuple[str, ...]:
    """`a,b, c` as the models in order, each once."""
    return tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))


def unknown_provider(model: str, providers: Iterable[str]) -> str | None:
    """The prefix of `model` when it names a provider that is not configured (`openrutr:x`), else None.
    A prefix with a `/` or a `.` in it is part of a model's own name, not a provider."""
    prefix, colon, rest = model.partition(":")
    if not colon or not rest or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", prefix):
        return None
    return None if prefix.lower() in {TOGETHER, *providers} else prefix


def _check_models(chain: ChainSettings, default_model: str) -> None:
    names = [p.name for p in chain.providers]
    named = [("BOT_MODEL", default_model)] + [("BOT_FALLBACK_MODELS", m) for m in chain.fallback_models]
    for variable, model in named:
        prefix = unknown_provider(model, names)
        if prefix is not None:
            raise ConfigError(
                f"{variable} names {model!r}, but no provider {prefix!r} is set: add PROVIDER_"
                f"{prefix.upper()}_BASE_URL (and PROVIDER_{prefix.upper()}_API_KEY), or fix the name."
            )


def _traces(r: Reader) -> TraceSettings:
    endpoint = r.url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", websocket=False)
    base = r.url("OTEL_EXPORTER_OTLP_ENDPOINT", websocket=False)
    if endpoint is None and base is not None:
        endpoint = base.rstrip("/") + "/v1/traces"  # as the OTLP specification builds it from the base
    return TraceSettings(
        endpoint=endpoint,
        headers=r.text("OTEL_EXPORTER_OTLP_HEADERS"),
        service_name=r.text("OTEL_SERVICE_NAME") or TraceSettings.service_name,
        capture_content=r.flag("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"),
    )


def _check_multi_workspace(slack: SlackSettings) -> None:
    """The OAuth settings go together, in HTTP mode, and exclude a fixed bot token.

    A missing SLACK_TOKEN_ENCRYPTION_KEY is not refused here but by the platform's own problems
    (`adapters/slack/platform.py`, run by `bot.app.preflight`), so `check` reports it along with
    everything else."""
    if bool(slack.client_id) != bool(slack.client_secret):
        raise ConfigError(
            "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET go together (multi-workspace mode): set both, from "
            "the app's Basic Information page (App Credentials), or neither."
        )
    if not slack.multi_workspace:
        return
    if slack.bot_token:
        raise ConfigError(
            "SLACK_BOT_TOKEN and SLACK_CLIENT_ID are both set: unset SLACK_BOT_TOKEN for multi-workspace "
            "mode (each workspace's token comes from its installation), or unset SLACK_CLIENT_ID and "
            "SLACK_CLIENT_SECRET for one workspace."
        )
    if slack.mode != "http":
        raise ConfigError(
            "Multi-workspace mode (SLACK_CLIENT_ID) needs SLACK_MODE=http: Socket Mode cannot serve the "
            "install page and the OAuth redirect."
        )
    if not slack.state_secret:
        raise ConfigError(
            "Multi-workspace mode needs SLACK_STATE_SECRET (any long random string, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`): it signs the OAuth state."
        )


def default_provider(settings: Settings) -> ProviderSettings | None:
    """The provider `BOT_MODEL` names (`openrouter:qwen/qwen3-8b`), or None for Together's."""
    prefix, colon, rest = settings.model.model.partition(":")
    named = {p.name: p for p in settings.chain.providers}
    return named.get(prefix.lower()) if colon and rest else None


def require_model_key(settings: Settings) -> tuple[str, str]:
    """The default model's API base URL and key, for the start-up check: Together's key unless
    `BOT_MODEL` is another provider's (whose key may be empty: a local server needs none)."""
    provider = default_provider(settings)
    if provider is not None:
        return provider.base_url, provider.api_key or ""
    if not settings.model.api_key:
        raise ConfigError(
            "TOGETHER_API_KEY is not set: create a key at https://api.together.ai/settings/api-keys "
            "and put TOGETHER_API_KEY=... in .env (or the environment), or make BOT_MODEL another "
            "provider's (PROVIDER_<NAME>_BASE_URL, BOT_MODEL=name:model)."
        )
    return settings.model.base_url, settings.model.api_key
