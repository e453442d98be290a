"""Multi-workspace mode for operators: the settings it needs, `run` refusing to start without the
encryption key, `check` naming the mode and counting installations, `forget-workspace`, and the
installation store itself (encryption at rest, key rotation, Enterprise Grid keys)."""

from __future__ import annotations

import pytest
import redis.asyncio as redis
from slack_sdk.oauth.installation_store.models.installation import Installation

from adapters.slack.installations import RedisInstallationStore, SignedStateStore
from adapters.slack.scopes import bot_scopes
from bot.config import ConfigError, load_settings
from bot.state.installations import OneTimeStates, SealedRecords
from bot.state.keys import Keys
from bot.state.sealed import Sealer, new_key
from tests.fakes.llm import FakeLLM
from tests.fakes.slack import FakeSlack
from tests.ops.test_run_startup import fails
from tests.slack.test_slack_manifest import listed
from tests.support.cli import cli_process, run_cli
from tests.support.helpers import free_port
from tests.support.oauth_helpers import installation_keys
from tests.support.slack_fixtures import ALICE, BOT, slack_rig
from tests.support.slack_oauth_fixtures import oauth_env

# Some of these bots run the command line (its own engine, on the wall clock), so the fakes
# are on the wall clock too (tests/support/clock.py).
pytestmark = pytest.mark.real_time


def acme(token: str = "xoxb-test-acme-secret", *, enterprise: str | None = None, team: str | None = "T0ACME",
         org_wide: bool = False) -> Installation:
    return Installation(
        app_id="A1", enterprise_id=enterprise, team_id=team, bot_token=token, bot_id="B1",
        bot_user_id="U0BOT", bot_scopes="chat:write", user_id="U0INSTALLER", is_enterprise_install=org_wide,
    )


def store(client: redis.Redis, prefix: str, key: str) -> RedisInstallationStore:
    return RedisInstallationStore(SealedRecords(client, Keys(prefix), "slack", Sealer(key)))


# ---- settings ------------------------------------------------------------------------------

def test_the_oauth_settings_go_together_in_http_mode() -> None:
    base = {"SLACK_CLIENT_ID": "1.2", "SLACK_CLIENT_SECRET": "s", "SLACK_SIGNING_SECRET": "x",
            "SLACK_STATE_SECRET": "st", "SLACK_MODE": "http"}
    slack = load_settings(base, dotenv=False).slack
    assert slack.multi_workspace and slack.enabled and not slack.bot_token
    for change, words in (
        ({"SLACK_CLIENT_SECRET": ""}, "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET go together"),
        ({"SLACK_BOT_TOKEN": "xoxb-test-1"}, "unset SLACK_BOT_TOKEN"),
        ({"SLACK_MODE": "socket", "SLACK_APP_TOKEN": "xapp-test-1"}, "needs SLACK_MODE=http"),
        ({"SLACK_STATE_SECRET": ""}, "needs SLACK_STATE_SECRET"),
        ({"SLACK_SIGNING_SECRET": ""}, "SLACK_SIGNING_SECRET"),
    ):
        with pytest.raises(ConfigError, match=words):
            load_settings(base | change, dotenv=False)
    secrets = load_settings(base | {"SLACK_TOKEN_ENCRYPTION_KEY": "k"}, dotenv=False).secrets()
    assert {"s", "st", "k"} <= set(secrets)  # redacted from every log line


def test_the_install_link_asks_for_the_manifests_bot_scopes() -> None:
    assert bot_scopes() == sorted(listed("bot"), key=bot_scopes().index)
    assert set(bot_scopes()) == listed("bot")
    with pytest.raises(ConfigError, match=r"oauth_config\.scopes\.bot"):
        bot_scopes("display_information:\n  name: x\n")


# ---- run and check -------------------------------------------------------------------------

async def test_run_refuses_to_start_without_a_usable_encryption_key(engine_env: dict[str, str]) -> None:
    async with FakeSlack() as fake:
        env = oauth_env(engine_env, fake, SLACK_PORT=str(free_port()))
        no_key = env | {"SLACK_TOKEN_ENCRYPTION_KEY": ""}
        line = await fails(no_key, 2, "SLACK_TOKEN_ENCRYPTION_KEY is not set", "does not start without one")
        assert "Fernet.generate_key" in line
        line = await fails(env | {"SLACK_TOKEN_ENCRYPTION_KEY": "not-a-key"}, 2, "is not a Fernet key")
        assert "not-a-key" not in line
        await fails(env | {"REDIS_URL": ""}, 2, "REDIS_URL is not set", "multi-workspace")


async def test_check_names_the_mode_and_counts_installations(
    engine_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis, redis_prefix: str
) -> None:
    async with FakeSlack() as fake:
        env = oauth_env(engine_env, fake)
        code, out, _ = await run_cli(["check"], env)
        assert code == 0, out
        assert "many workspaces (OAuth installs)" in out
        assert "ok   slack: multi-workspace mode: 0 installations stored" in out
        assert "install at GET /slack/install" in out

        installs = store(redis_client, redis_prefix, env["SLACK_TOKEN_ENCRYPTION_KEY"])
        await installs.async_save(acme())
        code, out, _ = await run_cli(["check"], env)
        assert code == 0 and "1 installation stored" in out, out

        code, out, _ = await run_cli(["check"], env | {"SLACK_TOKEN_ENCRYPTION_KEY": new_key()})
        assert code == 1 and "does not open them" in out, out

        code, out, _ = await run_cli(["check"], env | {"SLACK_TOKEN_ENCRYPTION_KEY": ""})
        assert code == 1 and "FAIL settings: SLACK_TOKEN_ENCRYPTION_KEY is not set" in out, out

    single = await run_cli(["check"], engine_env | {
        "SLACK_BOT_TOKEN": "xoxb-test-x", "SLACK_APP_TOKEN": "xapp-test-x", "SLACK_API_URL": "http://127.0.0.1:1/api/",
    })
    assert "(Slack in socket mode, one workspace)" in single[1]


async def test_forget_workspace_deletes_that_workspace_only(
    engine_env: dict[str, str], redis_client: redis.Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix)
    key = new_key()
    installs = store(redis_client, redis_prefix, key)
    await installs.async_save(acme())
    await installs.async_save(acme("xoxb-test-other", team="T0OTHER"))
    for team in ("T0ACME", "T0OTHER"):
        await redis_client.rpush(f"{redis_prefix}:conv:{{slack:{team}:C1:1.0}}:history", "{}")
        await redis_client.hset(f"{redis_prefix}:persona:slack:{team}:C1", "prompt", "p")
        await redis_client.zadd(f"{redis_prefix}:pace:{{slack:{team}}}:chat.update:sent", {"a": 1})
        await redis_client.set(f"{redis_prefix}:seen:slack:{team}:C1:1.0", "1")
        await redis_client.hset(keys.usage("2026-12-01", "channel"), f"slack:{team}:C1|in", 5)
    await redis_client.hset(keys.usage("2026-12-01", "channel"), "discord:T0ACME:C1|in", 7)

    code, out, err = await cli_process(["forget-workspace", "T0ACME"], engine_env)  # the real entry point
    assert code == 0, err
    assert "5 keys deleted (1 installations), 1 channel usage counts" in out

    left = {str(k) async for k in redis_client.scan_iter(match=f"{redis_prefix}:*")}
    assert not [k for k in left if "T0ACME" in k and "usage" not in k]
    assert len([k for k in left if "T0OTHER" in k]) == 4 + 1  # its four keys and its installation
    usage = await redis_client.hgetall(keys.usage("2026-12-01", "channel"))
    assert usage == {"slack:T0OTHER:C1|in": "5", "discord:T0ACME:C1|in": "7"}
    assert await redis_client.smembers(keys.installations("slack")) == {"-:T0OTHER"}

    code, _, err = await run_cli(["forget-workspace", "T0*"], engine_env)
    assert code == 2 and "not a workspace id" in err
    code, _, err = await run_cli(["forget-workspace", "T0ACME"], engine_env | {"REDIS_URL": ""})
    assert code == 2 and "needs REDIS_URL" in err


# ---- the stores ------------------------------------------------------------------------------

async def test_tokens_are_encrypted_at_rest_and_a_rotated_key_still_opens_them(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    old = new_key()
    await store(redis_client, redis_prefix, old).async_save(acme())
    (key,) = await installation_keys(redis_client, Keys(redis_prefix))
    sealed = await redis_client.get(key)
    assert sealed and "xoxb-test-acme-secret" not in sealed and "U0INSTALLER" not in sealed

    found = await store(redis_client, redis_prefix, f"{new_key()},{old}").async_find_installation(
        enterprise_id=None, team_id="T0ACME")
    assert found is not None and found.bot_token == "xoxb-test-acme-secret"
    assert found.bot_user_id == "U0BOT" and found.bot_scopes == ["chat:write"]
    assert await store(redis_client, redis_prefix, new_key()).async_find_installation(
        enterprise_id=None, team_id="T0ACME") is None  # another key: not found, never garbage


async def test_enterprise_grid_installs_are_keyed_by_enterprise_and_team(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    installs = store(redis_client, redis_prefix, new_key())
    await installs.async_save(acme("xoxb-test-org", enterprise="E1", team=None, org_wide=True))
    await installs.async_save(acme("xoxb-test-ws", enterprise="E1", team="T1"))
    org = await installs.async_find_installation(enterprise_id="E1", team_id="T9", is_enterprise_install=True)
    ws = await installs.async_find_installation(enterprise_id="E1", team_id="T1")
    assert org is not None and org.bot_token == "xoxb-test-org"
    assert ws is not None and ws.bot_token == "xoxb-test-ws"

    await installs.forget("E1", "T1", org_wide=False)  # one workspace of the org uninstalls
    assert await installs.async_find_installation(enterprise_id="E1", team_id="T1") is None
    assert await installs.async_find_bot(enterprise_id="E1", team_id="T1", is_enterprise_install=True)
    await installs.forget("E1", "T1", org_wide=True)  # the org-wide app is removed
    assert await installation_keys(redis_client, Keys(redis_prefix)) == set()


async def test_oauth_states_are_signed_and_single_use(redis_client: redis.Redis, redis_prefix: str) -> None:
    states = SignedStateStore(OneTimeStates(redis_client, Keys(redis_prefix), "slack", 600), "secret")
    state = await states.async_issue()
    nonce = state.split(".")[0]
    other = SignedStateStore(OneTimeStates(redis_client, Keys(redis_prefix), "slack", 600), "other secret")
    assert not await other.async_consume(state)  # signed with another secret
    assert not await states.async_consume(nonce)  # unsigned
    assert not await states.async_consume("")
    assert await states.async_consume(state)
    assert not await states.async_consume(state)  # used
    assert 0 < await redis_client.ttl(Keys(redis_prefix).oauth_state("slack", (await states.async_issue())
                                                                       .split(".")[0])) <= 600


async def test_single_workspace_mode_notes_an_uninstall_and_keeps_working(
    base_env: dict[str, str], fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    async with slack_rig(base_env, fake_llm, mode="http") as rig:
        reply = await rig.send_signed({"type": "app_uninstalled", "event_ts": "1.0"})
        assert reply.status == 200
        assert "SLACK_BOT_TOKEN is void" in caplog.text
        message = await rig.say("C1", ALICE, f"<@{BOT}> still here?")
        await rig.wait_reply(message, fake_llm.answer.text)
        assert rig.adapter.multi is None and len(rig.adapter.workspaces) == 0
