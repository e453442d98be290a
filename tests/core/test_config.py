"""Settings: validation messages, defaults, and `.env.example` kept in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings, redact_url

ROOT = Path(__file__).parents[2]
NAME = re.compile(r'"([A-Z][A-Z0-9_]+)"')


def setting_names() -> set[str]:
    source = (ROOT / "bot" / "config.py").read_text()
    reads = re.findall(r'r\.\w+\(\s*"([A-Z][A-Z0-9_]+)"', source)
    return set(reads)


def example_names() -> set[str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if re.match(r"^[A-Z][A-Z0-9_]+=", line)}


def test_every_setting_is_documented_in_env_example() -> None:
    assert setting_names() - example_names() == set()
    assert example_names() - setting_names() == set()
    assert {"TOGETHER_API_KEY", "REDIS_URL", "SLACK_BOT_TOKEN", "DISCORD_GATEWAY_URL"} <= setting_names()


def test_defaults() -> None:
    settings = load_settings({}, dotenv=False)
    assert settings.model.base_url == "https://api.together.ai/v1"
    assert settings.redis_url is None
    assert settings.history_ttl == 7 * 24 * 3600
    assert not settings.slack.enabled and not settings.discord.enabled


def test_empty_string_counts_as_unset() -> None:
    settings = load_settings({"REDIS_URL": "", "BOT_MAX_TOKENS": " "}, dotenv=False)
    assert settings.redis_url is None and settings.model.max_tokens == 1024


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"BOT_MAX_TOKENS": "lots"}, "BOT_MAX_TOKENS='lots' is not valid"),
        ({"BOT_TEMPERATURE": "7"}, "BOT_TEMPERATURE=7.0 is out of range"),
        ({"SLACK_MODE": "carrier-pigeon"}, "SLACK_MODE"),
        ({"SLACK_PROGRESS": "many"}, "SLACK_PROGRESS"),
        ({"REDIS_URL": "http://x:secret@host"}, "not a Redis URL"),
        ({"TOGETHER_BASE_URL": "api.together.ai"}, "TOGETHER_BASE_URL"),
        ({"SLACK_BOT_TOKEN": "xoxb-test"}, "SLACK_SIGNING_SECRET"),
        ({"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_MODE": "socket"}, "SLACK_APP_TOKEN"),
        ({"PERSONA_OPEN": "maybe"}, "PERSONA_OPEN"),
        ({"BOT_MAX_TOKENS": "40000"}, "BOT_CONTEXT_TOKENS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env, dotenv=False)
    assert words in str(caught.value)
    assert "secret" not in str(caught.value)


def test_slack_progress_is_parts_unless_single() -> None:
    assert load_settings({}, dotenv=False).slack.progress == "parts"
    assert load_settings({"SLACK_PROGRESS": "single"}, dotenv=False).slack.progress == "single"


def test_slack_mode_follows_the_tokens() -> None:
    socket = load_settings({"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_APP_TOKEN": "xapp-test"}, dotenv=False)
    assert socket.slack.mode == "socket"
    http = load_settings({"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "s"}, dotenv=False)
    assert http.slack.mode == "http"


def test_secrets_and_redaction() -> None:
    settings = load_settings(
        {"TOGETHER_API_KEY": "k1", "REDIS_URL": "redis://:pw@redis:6379/0"}, dotenv=False
    )
    assert set(settings.secrets()) == {"k1", "pw"}
    assert redact_url("redis://user:pw@redis:6379/0") == "redis://user:***@redis:6379/0"
    assert redact_url("redis://redis:6379/0") == "redis://redis:6379/0"


def test_lists_are_split_on_commas() -> None:
    settings = load_settings({"PERSONA_ADMINS": "U1, U2,,", "ALLOWED_CHANNELS": "C1"}, dotenv=False)
    assert settings.persona_admins == {"U1", "U2"}
    assert settings.allowed_channels == {"C1"}


def test_discord_shards_default_to_the_recommended_count() -> None:
    discord = load_settings({}, dotenv=False).discord
    assert (discord.shard_count, discord.shard_ids) == (None, None)


@pytest.mark.parametrize(
    ("count", "ids", "expected"),
    [
        ("4", None, (4, None)),
        ("4", "0-1,3", (4, (0, 1, 3))),
        ("8", "5, 2", (8, (2, 5))),
        ("1", "0", (1, (0,))),
    ],
)
def test_discord_shard_settings(count: str, ids: str | None, expected: object) -> None:
    env = {"DISCORD_SHARD_COUNT": count, **({"DISCORD_SHARD_IDS": ids} if ids else {})}
    discord = load_settings(env, dotenv=False).discord
    assert (discord.shard_count, discord.shard_ids) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DISCORD_SHARD_IDS": "1"}, "DISCORD_SHARD_IDS=1 needs DISCORD_SHARD_COUNT"),
        ({"DISCORD_SHARD_COUNT": "0"}, "DISCORD_SHARD_COUNT=0 is too small"),
        ({"DISCORD_SHARD_COUNT": "two"}, "DISCORD_SHARD_COUNT='two' is not valid"),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "2"}, "names shard 2, but DISCORD_SHARD_COUNT=2"),
        ({"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "3-1"}, "DISCORD_SHARD_IDS='3-1' is not valid"),
        ({"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "0;1"}, "such as 0,3 or a range such as 0-3"),
        ({"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "-1"}, "DISCORD_SHARD_IDS='-1' is not valid"),
    ],
)
def test_bad_discord_shard_settings_say_what_to_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(env, dotenv=False)
