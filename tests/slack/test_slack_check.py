"""`python -m bot check` for Slack, against the fake."""

from __future__ import annotations

import pytest

from adapters.slack.check import check
from bot.config import load_settings
from bot.ops.problems import CheckFailed
from tests.fakes.slack import FakeSlack
from tests.support.slack_fixtures import slack_env


async def test_check_reports_the_bot_and_the_connection_mode(base_env: dict[str, str]) -> None:
    async with FakeSlack() as fake:
        socket = await check(load_settings(slack_env(base_env, fake, "socket"), dotenv=False))
        assert socket == "bot chatbot in workspace Fake Team; Socket Mode available"
        http = await check(load_settings(slack_env(base_env, fake, "http"), dotenv=False))
        assert "HTTP mode on port 3000" in http


async def test_check_names_the_token_that_is_wrong(base_env: dict[str, str]) -> None:
    async with FakeSlack() as fake:
        env = slack_env(base_env, fake, "socket")
        with pytest.raises(CheckFailed, match="SLACK_BOT_TOKEN") as bad_bot:
            await check(load_settings(env | {"SLACK_BOT_TOKEN": "xoxb-test-wrong"}, dotenv=False))
        with pytest.raises(CheckFailed, match="SLACK_APP_TOKEN") as bad_app:
            await check(load_settings(env | {"SLACK_APP_TOKEN": "xapp-test-wrong"}, dotenv=False))
        for failure in (bad_bot.value, bad_app.value):
            assert "wrong" not in str(failure)  # no token value in the message
