"""The commands people type: `python -m bot chat | check | run`, as real processes."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.fakes.llm import Answer, FakeLLM

ROOT = Path(__file__).parent.parent


async def bot(args: list[str], env: dict[str, str], stdin: str = "") -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_", "TOGETHER_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args,
        cwd=ROOT / "tests" / "data",  # no .env there: only what the test sets
        env=clean | {"PYTHONPATH": str(ROOT)} | env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_chat_scripted_through_stdin(engine_env: dict[str, str], fake_llm: FakeLLM) -> None:
    fake_llm.answer = Answer.of("Four, of course.")
    code, out, _ = await bot(
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

    # The same thread id continues the conversation from Redis in a new process.
    code, out, _ = await bot(["chat", "--thread", "cli-1"], engine_env, stdin="third\n")
    assert code == 0
    assert len(fake_llm.requests[2]["messages"]) == 6


async def test_chat_forget_and_model_error(engine_env: dict[str, str], fake_llm: FakeLLM) -> None:
    fake_llm.fail_next("404")
    code, out, _ = await bot(["chat"], engine_env, stdin="hello\n/forget\n")
    assert code == 0
    assert "does not know this model" in out
    assert "forgotten" in out


async def test_chat_works_without_redis(engine_env: dict[str, str], fake_llm: FakeLLM) -> None:
    env = engine_env | {"REDIS_URL": ""}
    code, out, err = await bot(["chat"], env, stdin="hi\n")
    assert code == 0
    assert fake_llm.answer.text in out
    assert "REDIS_URL is not set" in err


async def test_chat_without_key_says_what_to_set(engine_env: dict[str, str]) -> None:
    code, _, err = await bot(["chat"], engine_env | {"TOGETHER_API_KEY": ""})
    assert code == 2
    assert "TOGETHER_API_KEY is not set" in err


async def test_unknown_preset(engine_env: dict[str, str]) -> None:
    code, _, err = await bot(["chat", "--persona", "nope"], engine_env)
    assert code == 2 and "no preset 'nope'" in err


async def test_run_without_platforms_names_the_variables(engine_env: dict[str, str]) -> None:
    code, _, err = await bot(["run"], engine_env)
    assert code == 2
    assert "SLACK_BOT_TOKEN" in err and "DISCORD_BOT_TOKEN" in err


async def test_check_passes_then_pinpoints_failures(engine_env: dict[str, str], fake_llm: FakeLLM) -> None:
    code, out, _ = await bot(["check"], engine_env)
    assert code == 0, out
    assert "ok   redis" in out and "ok   model" in out

    fake_llm.fail_next("401")
    code, out, _ = await bot(["check"], engine_env)
    assert code == 1 and "refused TOGETHER_API_KEY (401)" in out and "test-key" not in out

    fake_llm.fail_next("404")
    code, out, _ = await bot(["check"], engine_env)
    assert code == 1 and "BOT_MODEL='test/model'" in out

    code, out, _ = await bot(["check"], engine_env | {"TOGETHER_API_KEY": ""})
    assert code == 1 and "TOGETHER_API_KEY is not set" in out

    code, out, _ = await bot(["check"], engine_env | {"REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"})
    assert code == 1
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in out and "hunter2" not in out


async def test_bad_setting_is_reported_before_anything_runs(engine_env: dict[str, str]) -> None:
    code, _, err = await bot(["chat"], engine_env | {"BOT_TEMPERATURE": "hot"})
    assert code == 2 and "BOT_TEMPERATURE" in err


async def test_operator_sets_a_channels_persona_from_the_command_line(
    engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    code, out, _ = await bot(["persona", "slack:T1:C1", "use", "sre"], engine_env)
    assert code == 0 and "now uses the `sre` persona" in out
    code, out, _ = await bot(["persona", "slack:T1:C1", "show"], engine_env)
    assert "preset `sre`" in out and "set by an operator" in out
    code, _, err = await bot(["persona", "C1", "show"], engine_env)
    assert code == 2 and "platform:workspace:channel" in err
    code, _, err = await bot(["persona", "slack:T1:C1", "show"], engine_env | {"REDIS_URL": ""})
    assert code == 2 and "needs REDIS_URL" in err
