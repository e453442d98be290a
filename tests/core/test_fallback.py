"""The fallback chain end to end: two fake providers, real Redis, a recording surface."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from bot.app.check import model_checks
from bot.app.runtime import open_engine
from bot.config import ConfigError, load_settings
from bot.contract import SurfaceLimits
from bot.contract.commands import CommandError, CommandLimits, Invalid, PersonaFallback, check, parse
from bot.conversations.personas import Persona
from bot.engine import Engine
from bot.model.fallback import ChainAnswer, lacking
from bot.model.llm import BadRequest, ChatRequest
from bot.model.providers import ModelRef, model_ref
from bot.ops import metrics
from bot.ops.problems import CheckFailed
from tests.fakes.llm import Answer, FakeLLM
from tests.support.clock import FastClock
from tests.support.core import ALICE, conversation, turn
from tests.support.surfaces import RecordingSurface

PRIMARY = "test/model"
BACKUP = "backup:other/model"  # the second provider's model
CLOSED_PORT_URL = "http://127.0.0.1:9/v1"  # nothing listens on the discard port: connection refused


def fallbacks(frm: str, to: str, reason: str) -> float:
    labels = {"from": frm, "to": to, "reason": reason}
    return metrics.current().registry.get_sample_value("chatbot_model_fallbacks_total", labels) or 0.0


@pytest.fixture
async def backup_llm(clock: FastClock) -> AsyncIterator[FakeLLM]:
    async with FakeLLM(clock=clock) as fake:
        fake.answer = Answer.of("from the backup")
        yield fake


@pytest.fixture
def chain_env(engine_env: dict[str, str], backup_llm: FakeLLM) -> dict[str, str]:
    return engine_env | {
        "PROVIDER_BACKUP_BASE_URL": backup_llm.url,
        "PROVIDER_BACKUP_API_KEY": "backup-key",
        "BOT_FALLBACK_MODELS": BACKUP,
    }


@pytest.fixture
async def chain_engine(chain_env: dict[str, str], clock: FastClock) -> AsyncIterator[Engine]:
    metrics.reset()
    async with open_engine(load_settings(chain_env, dotenv=False), clock) as engine:
        yield engine


@pytest.mark.parametrize(
    ("kind", "retry_after", "reason", "primary_requests"),
    [
        ("503", None, "server_error", 2),  # one retry, then the next model
        ("500", None, "server_error", 2),
        ("reset", None, "unavailable", 2),
        ("error_event", None, "unavailable", 2),  # an error in the stream before any text
        ("404", None, "not_found", 1),  # a retired model: no retry
        ("429", 60.0, "rate_limited", 1),  # a long Retry-After: no wait, the next model at once
    ],
)
async def test_each_failure_before_the_first_token_moves_on(
    chain_engine: Engine, fake_llm: FakeLLM, backup_llm: FakeLLM,
    kind: str, retry_after: float | None, reason: str, primary_requests: int,
) -> None:
    fake_llm.fail_model(PRIMARY, kind, retry_after=retry_after)
    surface = RecordingSurface()
    outcome = await chain_engine.answer(turn("hello", surface=surface))
    assert outcome.outcome == "ok"
    assert surface.text.startswith("from the backup")
    assert f"Answered by `{BACKUP}`" in surface.text and f"`{PRIMARY}` could not answer" in surface.text
    assert fake_llm.asked(PRIMARY) == primary_requests
    assert backup_llm.asked("other/model") == 1  # the provider is asked for its own name of the model
    assert backup_llm.requests[0]["messages"][-1]["content"].endswith("hello")
    assert outcome.model == BACKUP  # the log line and usage count the model that answered
    assert fallbacks(PRIMARY, BACKUP, reason) == 1
    tokens = metrics.current().registry.get_sample_value(
        "chatbot_model_tokens_total", {"model": BACKUP, "direction": "out"}
    )
    assert tokens == outcome.tokens_out > 0


async def test_a_short_retry_after_is_waited_for_once(
    chain_engine: Engine, fake_llm: FakeLLM, backup_llm: FakeLLM
) -> None:
    fake_llm.fail_model(PRIMARY, "429", times=1, retry_after=0.1)
    surface = RecordingSurface()
    outcome = await chain_engine.answer(turn("hello", surface=surface))
    assert outcome.model == PRIMARY and "Answered by" not in surface.text
    assert fake_llm.asked(PRIMARY) == 2 and backup_llm.requests == []


@pytest.mark.parametrize("kind", ["stall", "hang"])
async def test_no_first_token_in_the_attempts_share_moves_on(
    chain_env: dict[str, str], clock: FastClock, fake_llm: FakeLLM, backup_llm: FakeLLM, kind: str
) -> None:
    metrics.reset()
    env = chain_env | {"LLM_FIRST_TOKEN_TIMEOUT": "2", "MODEL_FIRST_TOKEN_TIMEOUT": "20"}
    async with open_engine(load_settings(env, dotenv=False), clock) as engine:
        fake_llm.fail_model(PRIMARY, kind)
        surface = RecordingSurface()
        outcome = await engine.answer(turn("hello", surface=surface))
    assert outcome.model == BACKUP and surface.text.startswith("from the backup")
    assert fake_llm.asked(PRIMARY) == 1  # a model that is slow is not asked twice
    assert fallbacks(PRIMARY, BACKUP, "timeout") == 1


async def test_connection_refused_moves_on(
    chain_env: dict[str, str], clock: FastClock, fake_llm: FakeLLM
) -> None:
    metrics.reset()
    env = chain_env | {"PROVIDER_DEAD_BASE_URL": CLOSED_PORT_URL, "BOT_MODEL": "dead:some/model",
                       "BOT_FALLBACK_MODELS": PRIMARY}
    async with open_engine(load_settings(env, dotenv=False), clock) as engine:
        surface = RecordingSurface()
        outcome = await engine.answer(turn("hello", surface=surface))
    assert outcome.model == PRIMARY and surface.text.startswith(fake_llm.answer.text)
    assert fallbacks("dead:some/model", PRIMARY, "unavailable") == 1


@pytest.mark.parametrize(("kind", "words"), [("401", "PROVIDER_BACKUP_API_KEY"), ("402", "out of credits")])
async def test_auth_and_payment_are_said_and_the_chain_is_left_alone(
    chain_env: dict[str, str], clock: FastClock, fake_llm: FakeLLM, backup_llm: FakeLLM, kind: str, words: str
) -> None:
    metrics.reset()
    env = chain_env | {"BOT_MODEL": BACKUP, "BOT_FALLBACK_MODELS": PRIMARY}
    async with open_engine(load_settings(env, dotenv=False), clock) as engine:
        backup_llm.fail_model("other/model", kind)
        surface = RecordingSurface()
        outcome = await engine.answer(turn("hello", surface=surface))
        states = await engine.breakers.states([BACKUP])
    assert outcome.outcome == "error" and outcome.error in ("auth", "payment")
    assert words in surface.text and "`backup`" in surface.text
    assert fake_llm.requests == []  # the next model is not tried
    assert backup_llm.asked("other/model") == 1  # nor is this one retried
    assert states == {BACKUP: "closed"}  # an operator's problem is not the model's failure
    assert metrics.current().registry.get_sample_value("chatbot_model_fallbacks_total", {
        "from": BACKUP, "to": PRIMARY, "reason": "auth"}) is None


async def test_no_fallback_after_the_first_token(
    chain_engine: Engine, fake_llm: FakeLLM, backup_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.words(20)
    fake_llm.fail_model(PRIMARY, "cut")
    surface = RecordingSurface()
    outcome = await chain_engine.answer(turn("hello", surface=surface))
    assert outcome.outcome == "interrupted" and outcome.model == PRIMARY
    assert surface.text.startswith("w1 w2")
    assert backup_llm.requests == []  # two models never write one answer
    assert "Answered by" not in surface.text


async def test_the_whole_chain_stays_within_the_first_token_budget(
    chain_env: dict[str, str], clock: FastClock, fake_llm: FakeLLM, backup_llm: FakeLLM
) -> None:
    third = "backup:third/model"
    env = chain_env | {
        "MODEL_FIRST_TOKEN_TIMEOUT": "4", "LLM_FIRST_TOKEN_TIMEOUT": "30",
        "BOT_FALLBACK_MODELS": f"{BACKUP},{third}",
    }
    async with open_engine(load_settings(env, dotenv=False), clock) as engine:
        fake_llm.fail_model(PRIMARY, "hang")
        backup_llm.fail_model("other/model", "hang")
        backup_llm.fail_model("third/model", "hang")
        surface = RecordingSurface()
        started = time.monotonic()
        outcome = await engine.answer(turn("hello", surface=surface))
        took = time.monotonic() - started
    assert outcome.outcome == "error" and outcome.error == "timeout"
    assert "fallbacks cannot answer" in surface.text
    # Every model had its share of the 4 s (1 s of the wall on the test clock); none had 30 s.
    assert fake_llm.asked(PRIMARY) == backup_llm.asked("other/model") == backup_llm.asked("third/model") == 1
    assert took < clock.real(4) + 0.5


async def test_a_personas_own_chain_and_off(
    chain_env: dict[str, str], clock: FastClock, fake_llm: FakeLLM, backup_llm: FakeLLM
) -> None:
    own = "backup:persona/model"
    async with open_engine(load_settings(chain_env, dotenv=False), clock) as engine:
        scope = conversation().channel_scope

        async def persona(line: str) -> str:
            return await engine.command(line, scope=scope, conversation=None, actor=ALICE, can_admin=True)

        assert "Done" in await persona(f"/persona fallback {own}")
        assert f"fallback: `{own}`" in await persona("/persona show")
        fake_llm.fail_model(PRIMARY, "503")
        first = await engine.answer(turn("one", thread="t1"))
        assert first.model == own and backup_llm.asked("persona/model") == 1
        assert backup_llm.asked("other/model") == 0  # BOT_FALLBACK_MODELS is not this channel's chain

        assert "Done" in await persona("/persona fallback off")
        surface = RecordingSurface()
        second = await engine.answer(turn("two", thread="t2", surface=surface))
        assert second.outcome == "error" and len(backup_llm.requests) == 1
        assert "The model is unavailable" in surface.text

        assert "no provider" in (await persona("/persona fallback nowhere:model")).lower()
        assert "Done" in await persona("/persona fallback default")
        third = await engine.answer(turn("three", thread="t3"))
        assert third.model == BACKUP


async def test_an_image_request_moves_to_a_model_that_takes_images(
    chain_env: dict[str, str], clock: FastClock, fake_llm: FakeLLM, backup_llm: FakeLLM
) -> None:
    text_only, vision = "backup:text/model", "backup:acme/vision-model"
    env = chain_env | {"BOT_FALLBACK_MODELS": f"{text_only},{vision}"}
    async with open_engine(load_settings(env, dotenv=False), clock) as engine:
        fake_llm.without(PRIMARY, "images")
        request = ChatRequest(PRIMARY, [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]}])
        chain = engine.chain.models(PRIMARY, None)
        answer = ChainAnswer()
        text = "".join([d.content async for d in engine.chain.stream(
            request, chain, time.monotonic() + 10, answer)])
        assert text == "from the backup" and answer.model == vision
        assert answer.passed == [(text_only, "capability"), (PRIMARY, "capability")]
        assert backup_llm.asked("text/model") == 0  # a model known not to take images is not asked
        assert fake_llm.asked(PRIMARY) == 1  # one 400, and no retry
        # The next image request skips the model that said it cannot see, without asking it.
        again = ChainAnswer()
        [d async for d in engine.chain.stream(request, chain, time.monotonic() + 10, again)]
        assert again.model == vision and fake_llm.asked(PRIMARY) == 1


# ---- settings, names and commands ------------------------------------------------------


def test_providers_and_the_default_chain_are_read() -> None:
    settings = load_settings({
        "PROVIDER_OPENROUTER_BASE_URL": "https://openrouter.ai/api/v1/",
        "PROVIDER_OPENROUTER_API_KEY": "sk-or",
        "BOT_FALLBACK_MODELS": "openrouter:qwen/qwen3-8b, meta/llama,openrouter:qwen/qwen3-8b",
    }, dotenv=False)
    [provider] = settings.chain.providers
    assert (provider.name, provider.base_url, provider.api_key) == ("openrouter", "https://openrouter.ai/api/v1",
                                                                     "sk-or")
    assert settings.chain.fallback_models == ("openrouter:qwen/qwen3-8b", "meta/llama")
    assert "sk-or" in settings.secrets()
    assert model_ref("openrouter:qwen/qwen3-8b", {"openrouter"}) == ModelRef(
        "openrouter:qwen/qwen3-8b", "openrouter", "qwen/qwen3-8b")
    assert model_ref("Qwen/Qwen3.5-9B", {"openrouter"}).provider == "together"
    assert model_ref("together:Qwen/Qwen3.5-9B", set()).name == "Qwen/Qwen3.5-9B"


@pytest.mark.parametrize(("env", "words"), [
    ({"BOT_FALLBACK_MODELS": "openruter:qwen/qwen3-8b"}, "PROVIDER_OPENRUTER_BASE_URL"),
    ({"BOT_MODEL": "nowhere:m"}, "no provider 'nowhere'"),
    ({"PROVIDER_X_API_KEY": "k"}, "PROVIDER_X_BASE_URL is not"),
    ({"PROVIDER_X_BASE_URL": "openrouter.ai"}, "PROVIDER_X_BASE_URL"),
    ({"PROVIDER_TOGETHER_BASE_URL": "https://a.b"}, "TOGETHER_BASE_URL"),
])
def test_bad_provider_settings_say_what_to_fix(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_settings(env, dotenv=False)


@pytest.mark.parametrize(("line", "expected"), [
    ("/persona fallback a/m, b:c/d", PersonaFallback(("a/m", "b:c/d"))),
    ("/persona fallback off", PersonaFallback(())),
    ("/persona fallback default", PersonaFallback(None)),
])
def test_the_fallback_command_parses(line: str, expected: PersonaFallback) -> None:
    assert parse(line) == expected


def test_a_bad_fallback_command_says_how_to_type_it() -> None:
    wrong = parse("/persona fallback a m")
    assert isinstance(wrong, Invalid) and wrong.meant_change and "comma separated" in wrong.message
    too_many = parse("/persona fallback a,b,c,d,e,f")
    assert isinstance(too_many, PersonaFallback)
    with pytest.raises(CommandError, match="at most 5"):
        check(too_many, CommandLimits(max_tokens=100))


def test_a_personas_chain_round_trips_through_its_hash() -> None:
    for chain in (None, (), ("a", "b:c")):
        persona = Persona("prompt", fallback=chain)
        assert Persona.from_hash(persona.to_hash()).fallback == chain


async def test_check_reaches_every_provider_named(
    chain_env: dict[str, str], backup_llm: FakeLLM
) -> None:
    env = chain_env | {"PROVIDER_SPARE_BASE_URL": CLOSED_PORT_URL, "PROVIDER_SPARE_API_KEY": "k"}
    settings = load_settings(env, dotenv=False)
    checks = model_checks(settings)
    assert [name for name, _ in checks] == ["model", f"fallback {BACKUP}", "provider spare"]
    assert await checks[1][1](settings) == f"{BACKUP} answers at {backup_llm.url}"
    assert backup_llm.requests[-1]["model"] == "other/model"
    with pytest.raises(CheckFailed, match="PROVIDER_SPARE_BASE_URL"):
        await checks[2][1](settings)
    backup_llm.api_key = "another-key"
    with pytest.raises(CheckFailed, match="refused PROVIDER_BACKUP_API_KEY"):
        await checks[1][1](settings)


async def test_feedback_counts_against_the_model_that_answered(
    chain_engine: Engine, fake_llm: FakeLLM
) -> None:
    fake_llm.fail_model(PRIMARY, "503")
    with_buttons = SurfaceLimits(max_chars=4000, min_edit_interval=0.05, controls=True)
    asked = turn("hello", surface=RecordingSurface(limits=with_buttons))
    await chain_engine.answer(asked)
    assert (await chain_engine.feedback(asked.answer_id, ALICE, "up")).done
    [totals] = await chain_engine.feedback_votes.totals()
    assert (totals.model, totals.up) == (BACKUP, 1)


@pytest.mark.parametrize(("detail", "lacks"), [
    ("Model Qwen/Qwen3.5-9B does not support image inputs.", "images"),
    ("Invalid content type. image_url is only supported by certain models.", "images"),
    ("No endpoints found that support image input", "images"),
    ("This model does not support tools", None),  # the request needs no tools: not a reason to move
    ("Input validation error: `temperature` must be positive", None),
    ("image too large", None),  # the image is wrong, not the model
])
def test_which_400s_say_the_model_lacks_what_the_request_needs(detail: str, lacks: str | None) -> None:
    assert lacking(BadRequest(status=400, detail=detail), frozenset({"images"})) == lacks
