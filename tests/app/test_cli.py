"""The commands people type: `python -m bot chat | check | run | persona`.

Most run in this process (`tests/support/cli.py`); one of each command runs as a real process, through
the real entry point: chat without Redis, check with Redis down, persona, and each command's
`--help` (its program name comes from the real command line).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.llm import Answer, FakeLLM
from tests.support.cli import cli_process, run_cli
from tests.support.helpers import ROOT, bot_process, clean_environ, free_port, until_ready

# The bot under test runs on the wall clock (its own engine, or a process of its own), so the
# fakes do too (tests/support/clock.py).
pytestmark = pytest.mark.real_time


async def test_chat_scripted_through_stdin(engine_env: dict[str, str], fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.of("Four, of course.")
    code, out, _ = await run_cli(
        ["chat", "--thread", "cli-1", "--persona", "concise"], engine_env,
        stdin="what is 2+2?\n/persona show\nand again?\n",
    )
    assert code == 0
    assert out.count("Four, of course.") == 2
    assert "preset `concise`" in out
    assert len(fake_llm.requests) == 2
    second = fake_llm.requests[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert "few words" in second[0]["content"]  # the concise preset's prompt

    # The same thread id continues the conversation from Redis in a later run (a new engine).
    code, out, _ = await run_cli(["chat", "--thread", "cli-1"], engine_env, stdin="third\n")
    assert code == 0
    assert len(fake_llm.requests[2]["messages"]) == 6


async def test_chat_summarize_summarises_the_conversation_so_far(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.script = lambda asked: Answer.of(
        "- tides come from the moon [1] [2]" if asked.startswith("[1]") else "The moon pulls the sea."
    )
    code, out, _ = await run_cli(["chat"], engine_env, stdin="why are there tides?\n/summarize\n")
    assert code == 0
    summary_request = fake_llm.requests[-1]["messages"]
    assert summary_request[-1]["content"].splitlines() == [
        "[1] you: why are there tides?", "[2] the bot: The moon pulls the sea.",
    ]
    assert "summarise a conversation" in summary_request[0]["content"]
    # No links in a terminal: the cited numbers stay as they are.
    assert out.splitlines()[-1] == "- tides come from the moon [1] [2]"


async def test_chat_forget_and_model_error(engine_env: dict[str, str], fake_llm: FakeLLM) -> None:
    fake_llm.fail_next("404")
    code, out, _ = await run_cli(["chat"], engine_env, stdin="hello\n/forget\n")
    assert code == 0
    assert "does not know this model" in out
    assert "forgotten" in out


async def test_chat_works_without_redis(engine_env: dict[str, str], fake_llm: FakeLLM) -> None:
    env = engine_env | {"REDIS_URL": ""}
    code, out, err = await cli_process(["chat"], env, stdin="hi\n")  # the real entry point
    assert code == 0
    assert fake_llm.answer.text in out
    assert "REDIS_URL is not set" in err


async def test_chat_without_key_says_what_to_set(engine_env: dict[str, str]) -> None:
    code, _, err = await run_cli(["chat"], engine_env | {"TOGETHER_API_KEY": ""})
    assert code == 2
    assert "TOGETHER_API_KEY is not set" in err


async def test_unknown_preset(engine_env: dict[str, str]) -> None:
    code, _, err = await run_cli(["chat", "--persona", "nope"], engine_env)
    assert code == 2 and "no preset 'nope'" in err


async def test_run_without_platforms_names_the_variables(engine_env: dict[str, str]) -> None:
    code, _, err = await run_cli(["run"], engine_env)
    assert code == 2
    assert "SLACK_BOT_TOKEN" in err and "DISCORD_BOT_TOKEN" in err


async def test_check_passes_then_pinpoints_failures(engine_env: dict[str, str], fake_llm: FakeLLM) -> None:
    code, out, _ = await run_cli(["check"], engine_env)
    assert code == 0, out
    assert "ok   redis" in out and "ok   model" in out

    fake_llm.fail_next("401")
    code, out, _ = await run_cli(["check"], engine_env)
    assert code == 1 and "refused TOGETHER_API_KEY (401)" in out and "test-key" not in out

    fake_llm.fail_next("404")
    code, out, _ = await run_cli(["check"], engine_env)
    assert code == 1 and "BOT_MODEL='test/model'" in out

    code, out, _ = await run_cli(["check"], engine_env | {"TOGETHER_API_KEY": ""})
    assert code == 1 and "TOGETHER_API_KEY is not set" in out

    code, out, _ = await run_cli(["check"], engine_env | {"REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"})
    assert code == 1
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in out and "hunter2" not in out


async def test_bad_setting_is_reported_before_anything_runs(engine_env: dict[str, str]) -> None:
    code, _, err = await run_cli(["chat"], engine_env | {"BOT_TEMPERATURE": "hot"})
    assert code == 2 and "BOT_TEMPERATURE" in err


async def test_operator_sets_a_channels_persona_from_the_command_line(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    # The real entry point first; what the second run sees was kept in Redis by the first.
    code, out, _ = await cli_process(["persona", "slack:T1:C1", "use", "sre"], engine_env)
    assert code == 0 and "now uses the `sre` persona" in out
    code, out, _ = await run_cli(["persona", "slack:T1:C1", "show"], engine_env)
    assert "preset `sre`" in out and "set by an operator" in out
    code, _, err = await run_cli(["persona", "C1", "show"], engine_env)
    assert code == 2 and "platform:workspace:channel" in err
    code, _, err = await run_cli(["persona", "slack:T1:C1", "show"], engine_env | {"REDIS_URL": ""})
    assert code == 2 and "needs REDIS_URL" in err


async def test_check_reports_every_line_when_redis_is_down(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    from tests.fakes.slack import FakeSlack
    from tests.support.slack_fixtures import slack_env

    async with FakeSlack() as slack:
        env = slack_env(engine_env, slack, "socket") | {"REDIS_URL": "redis://127.0.0.1:1/0"}
        code, out, err = await cli_process(["check"], env)  # the real entry point
    assert code == 1
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == [
        "ok   settings", "FAIL redis", "ok   model", "ok   slack"
    ], out
    assert "1 of 4 checks failed" in out
    assert " INFO " not in out + err  # no library chatter in the report


async def test_check_names_token_kinds_and_explains_402(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    env = engine_env | {"SLACK_BOT_TOKEN": "xapp-test-abc", "SLACK_APP_TOKEN": "xoxb-test-123",
                        "SLACK_API_URL": "http://127.0.0.1:1/api/"}
    fake_llm.fail_next("402")
    code, out, _ = await run_cli(["check"], env)
    assert code == 1
    settings = next(line for line in out.splitlines() if line.startswith("FAIL settings"))
    assert "SLACK_BOT_TOKEN is an app-level token (xapp-…), not a bot token" in settings
    assert "SLACK_APP_TOKEN is a bot token (xoxb-…), not an app-level token" in settings
    assert "abc" not in out and "123" not in settings  # prefixes only, never the token
    model = next(line for line in out.splitlines() if line.startswith("FAIL model"))
    assert "402 Payment Required" in model and "out of credits" in model
    assert "FAIL slack: cannot reach the Slack API at http://127.0.0.1:1/api/" in out


async def test_check_with_unreadable_settings_says_so_in_its_own_format(engine_env: dict[str, str]) -> None:
    code, out, _ = await run_cli(["check"], engine_env | {"TOGETHER_BASE_URL": "ws://127.0.0.1:1/v1"})
    assert code == 2
    assert out.startswith("FAIL settings: TOGETHER_BASE_URL='ws://127.0.0.1:1/v1'")
    assert "http:// or https://" in out


async def test_chat_with_unreachable_redis_falls_back_in_one_line(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    env = engine_env | {"REDIS_URL": "redis://127.0.0.1:1/0"}
    code, out, err = await run_cli(["chat", "--thread", "keep-me"], env, stdin="hi\nagain\n")
    assert code == 0
    assert out.count(fake_llm.answer.text) == 2  # answered, not "Something went wrong"
    notice = [line for line in err.splitlines() if "Redis at redis://127.0.0.1:1/0" in line]
    assert len(notice) == 1 and "embedded in-memory store" in notice[0]
    assert "--thread keep-me: without Redis this conversation cannot be continued later" in err
    assert "Traceback" not in err


async def test_chat_names_the_model_url_it_cannot_reach(engine_env: dict[str, str]) -> None:
    env = engine_env | {"TOGETHER_BASE_URL": "http://127.0.0.1:1/v1"}
    code, out, err = await run_cli(["chat"], env, stdin="hi\n")
    assert code == 1 and out == ""
    assert err.strip().splitlines()[-1].startswith("cannot reach the model API at http://127.0.0.1:1/v1")


async def test_help_describes_each_command_under_its_own_name() -> None:
    for command, words in (("run", "Start Slack and/or Discord"), ("check", "one line each"),
                           ("chat", "Ctrl-C stops an answer"), ("usage", "Needs REDIS_URL"),
                           ("persona", "Needs REDIS_URL")):
        code, out, _ = await cli_process([command, "--help"], {})
        assert code == 0 and words in " ".join(out.split()), out
        assert f"usage: python -m bot {command}" in out
    script = Path(sys.executable).parent / "chatbot"
    if script.exists():  # the console script, when the project is installed
        process = await asyncio.create_subprocess_exec(
            script, "--help", stdout=asyncio.subprocess.PIPE, cwd=ROOT / "tests" / "data"
        )
        out_bytes, _ = await asyncio.wait_for(process.communicate(), 30)
        assert out_bytes.decode().startswith("usage: chatbot ")


async def test_chat_says_at_once_when_the_key_is_refused(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.api_key = "the-right-key"
    code, out, err = await run_cli(["chat"], engine_env, stdin="hi\n")
    assert code == 2 and out == ""
    assert f"the model API at {fake_llm.url} refused TOGETHER_API_KEY (401)" in err
    assert "test-key" not in err and not fake_llm.streams  # nothing was asked of the model


async def test_chat_attach_sends_a_local_file_with_the_next_message(
    engine_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# Plan\nship on friday\n")
    fake_llm.answer = Answer.of("Friday.")
    code, out, _ = await run_cli(
        ["chat"], engine_env | {"BOT_VISION": "off"},
        stdin=f"/attach {notes}\n/attach {tmp_path / 'missing.txt'}\nwhen do we ship?\nand after?\n",
    )
    assert code == 0
    assert "Attached `notes.md`: it goes with your next message." in out
    assert f"There is no file `{tmp_path / 'missing.txt'}`." in out
    first = fake_llm.requests[0]["messages"][-1]["content"]
    assert first == "you: when do we ship?\n\nFile `notes.md`:\n```\n# Plan\nship on friday\n\n```"
    assert fake_llm.requests[1]["messages"][-1]["content"] == "you: and after?"  # the next one only


async def test_the_console_script_chats_with_the_fake_model_from_the_checkout() -> None:
    """`chatbot chat --fake`, venv active, in the repository: the same as `python -m bot chat
    --fake` (the console script's path starts at the venv, not the checkout)."""
    script = Path(sys.executable).parent / "chatbot"
    assert script.exists(), "the suite runs in the virtualenv scripts/_venv.sh installed"
    process = await asyncio.create_subprocess_exec(
        script, "chat", "--fake", cwd=ROOT, env=clean_environ() | {"REDIS_URL": ""},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(b"hi\n"), 60)
    assert process.returncode == 0, err.decode()
    assert "This is the **fake model**" in out.decode()


async def test_run_without_a_platform_is_one_line_naming_the_settings_and_the_way_out(
    engine_env: dict[str, str],
) -> None:
    code, out, err = await run_cli(["run"], engine_env)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    for named in ("SLACK_BOT_TOKEN", "DISCORD_BOT_TOKEN", ".env.example", "run --no-platform"):
        assert named in err


async def test_run_with_no_platform_serves_health_and_metrics_locally(engine_env: dict[str, str]) -> None:
    port = free_port()
    async with bot_process("-m", "bot", "run", "--no-platform", env=engine_env | {
        "HEALTH_PORT": str(port), "LOG_FORMAT": "text",
    }) as process:

        async def ready() -> bool:
            return await get(port, "/readyz") is not None

        await until_ready(process, ready)
        expected = {"/healthz": "", "/readyz": '"ready": true', "/metrics": "chatbot_answers_total"}
        for path, words in expected.items():
            body = await get(port, path)
            assert body is not None and words in body, (path, body)
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert f"health server on port {port}" in err.decode()  # the port is named at start


async def get(port: int, path: str) -> str | None:
    """The body of GET path on 127.0.0.1:port when it answers 200, else None."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=2)) as resp,
        ):
            return await resp.text() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def test_a_default_model_of_another_provider_needs_no_together_key(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    """BOT_MODEL=local:NAME asks PROVIDER_LOCAL_BASE_URL (a local server needs no key): chat
    starts without TOGETHER_API_KEY, and run gets past the key to what it does need."""
    fake_llm.answer = Answer.of("From the local server.")
    env = engine_env | {
        "TOGETHER_API_KEY": "", "TOGETHER_BASE_URL": "http://127.0.0.1:1/v1",
        "PROVIDER_LOCAL_BASE_URL": fake_llm.url, "BOT_MODEL": "local:small-model",
    }
    code, out, err = await run_cli(["chat"], env, stdin="hi\n")
    assert code == 0, err
    assert "From the local server." in out
    assert fake_llm.requests[-1]["model"] == "small-model"
    code, _, err = await run_cli(["run"], env)
    assert code == 2 and "TOGETHER_API_KEY" not in err and "No platform is enabled" in err
