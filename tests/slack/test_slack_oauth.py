"""Multi-workspace mode end to end: the OAuth install flow over HTTP (real bolt), each workspace
answered with its own token, uninstalls, forged states, token rotation (docs/slack.md)."""

from __future__ import annotations

import asyncio
import dataclasses

import redis.asyncio as redis

from adapters.slack.installations import record_name
from bot.contract import ConversationKey
from bot.state.keys import Keys
from bot.state.sealed import Sealer
from tests.fakes.llm import Answer, FakeLLM
from tests.fakes.slack_oauth import Install
from tests.support.oauth_helpers import installation_keys
from tests.support.slack_fixtures import ADMIN, ALICE
from tests.support.slack_oauth_fixtures import ACME, GLOBEX, OAuthRig, oauth_rig


def tokens_used(rig: OAuthRig, *methods: str) -> set[str]:
    return {call.token for call in rig.fake.calls_to(*methods)}


def token_of(rig: OAuthRig, install: Install) -> set[str]:
    return {t.value for t in rig.fake.oauth.tokens.values() if t.install is install}


async def test_two_workspaces_install_and_each_answer_uses_its_own_token(
    base_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis
) -> None:
    fake_llm.answer = Answer.of("Hello from the model.")
    async with oauth_rig(base_env, fake_llm) as rig:
        for install in (ACME, GLOBEX):
            done = await rig.install(install)
            assert "Thank you" in done.body
        # The scopes asked for are the manifest's.
        assert "chat:write" in rig.fake.oauth.scopes_granted and "users:read" in rig.fake.oauth.scopes_granted

        acme_msg = await rig.mention(ACME, "C1", ALICE.id, "hi")
        globex_msg = await rig.mention(GLOBEX, "C1", ALICE.id, "hi")  # the same channel id
        await rig.wait_answer(ACME, acme_msg, fake_llm.answer.text)
        await rig.wait_answer(GLOBEX, globex_msg, fake_llm.answer.text)

        acme_token, globex_token = token_of(rig, ACME), token_of(rig, GLOBEX)
        writes = [c for c in rig.fake.writes() if c.params.get("thread_ts")]
        by_thread = {c.params["thread_ts"]: set() for c in writes}
        for call in writes:
            by_thread[call.params["thread_ts"]].add(call.token)
        assert by_thread[acme_msg.ts] <= acme_token and by_thread[acme_msg.ts]
        assert by_thread[globex_msg.ts] <= globex_token and by_thread[globex_msg.ts]
        assert rig.fake.bot_token not in tokens_used(rig, "chat.postMessage", "chat.update")

        # In Redis: one record per workspace, and no token in clear.
        keys = Keys(rig.settings.redis_prefix)
        stored = await installation_keys(redis_client, keys)
        assert stored == {keys.installation("slack", record_name(None, t)) for t in ("T0ACME", "T0GLOBEX")}
        for key in stored:
            sealed = await redis_client.get(key)
            assert sealed and "xoxb-" not in sealed and "T0ACME" not in sealed
        sealer = Sealer(rig.settings.slack.token_encryption_key or "")
        opened = sealer.open(await redis_client.get(keys.installation("slack", "-:T0ACME")) or "")
        assert next(iter(acme_token)) in opened


async def test_uninstall_deletes_the_tokens_at_once_and_its_events_are_ignored(
    base_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis
) -> None:
    fake_llm.answer = Answer.of("Answer.")
    async with oauth_rig(base_env, fake_llm) as rig:
        await rig.install(ACME)
        await rig.install(GLOBEX)
        first = await rig.mention(GLOBEX, "C1", ALICE.id, "before")
        await rig.wait_answer(GLOBEX, first, fake_llm.answer.text)

        rig.fake.oauth.uninstall(GLOBEX)
        reply = await rig.deliver(GLOBEX, {"type": "app_uninstalled", "event_ts": "1.0"})
        assert reply.status == 200
        keys = Keys(rig.settings.redis_prefix)
        assert await redis_client.exists(keys.installation("slack", "-:T0GLOBEX")) == 0
        assert await redis_client.smembers(keys.installations("slack")) == {"-:T0ACME"}

        asked = len(fake_llm.requests)
        ignored = await rig.mention(GLOBEX, "C2", ALICE.id, "after")
        still = await rig.mention(ACME, "C2", ALICE.id, "still there?")
        await rig.wait_answer(ACME, still, fake_llm.answer.text)
        assert len(fake_llm.requests) == asked + 1  # only Acme's question reached the model
        assert rig.fake.replies_by(GLOBEX, "C2", ignored.ts) == ""


async def test_tokens_revoked_deletes_the_installation(
    base_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis
) -> None:
    async with oauth_rig(base_env, fake_llm) as rig:
        await rig.install(ACME)
        keys = Keys(rig.settings.redis_prefix)
        assert await redis_client.exists(keys.installation("slack", "-:T0ACME")) == 1
        revoked = {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": [ACME.bot_user_id]}}
        assert (await rig.deliver(ACME, revoked)).status == 200
        assert await redis_client.exists(keys.installation("slack", "-:T0ACME")) == 0


async def test_a_forged_a_reused_or_a_cookieless_state_is_refused(
    base_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis
) -> None:
    async with oauth_rig(base_env, fake_llm) as rig:
        keys = Keys(rig.settings.redis_prefix)
        link, cookie = await rig.install_link()
        redirect = rig.fake.oauth.approve(link, ACME)
        state = redirect.split("state=")[1]
        nonce, signature = state.split(".")
        forged_state = f"{nonce}.{'0' * len(signature)}"
        forged = await rig.redirect(
            redirect.replace(state, forged_state), f"slack-app-oauth-state={forged_state}"
        )
        assert forged.status == 401
        no_cookie = await rig.redirect(redirect, "")
        assert no_cookie.status == 400
        assert await installation_keys(redis_client, keys) == set()
        assert not rig.fake.calls_to("oauth.v2.access")  # no code was exchanged for a refused state

        done = await rig.redirect(redirect, cookie)  # the genuine one works, once
        assert done.status == 200
        again = await rig.redirect(rig.fake.oauth.approve(link, GLOBEX), cookie)
        assert again.status == 401
        assert await installation_keys(redis_client, keys) == {keys.installation("slack", "-:T0ACME")}


async def test_an_expired_state_is_refused(
    base_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis
) -> None:
    async with oauth_rig(base_env, fake_llm) as rig:
        link, cookie = await rig.install_link()
        nonce = link.split("state=")[1].split("&")[0].split(".")[0]
        # Ten minutes later: Redis expired the state.
        await redis_client.delete(Keys(rig.settings.redis_prefix).oauth_state("slack", nonce))
        late = await rig.redirect(rig.fake.oauth.approve(link, ACME), cookie)
        assert late.status == 401
        assert not rig.fake.calls_to("oauth.v2.access")


async def test_rotation_refreshes_an_expiring_token_before_the_answer(
    base_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis
) -> None:
    fake_llm.answer = Answer.of("Rotated.")
    rotating = dataclasses.replace(ACME, token_lifetime=3600)  # under the 2 hours bolt refreshes within
    async with oauth_rig(base_env, fake_llm) as rig:
        await rig.install(rotating)
        (first,) = token_of(rig, rotating)
        message = await rig.mention(rotating, "C1", ALICE.id, "hi")
        await rig.wait_answer(rotating, message, fake_llm.answer.text)

        refreshes = [c for c in rig.fake.calls_to("oauth.v2.access") if c.params.get("grant_type")]
        assert len(refreshes) == 1 and refreshes[0].ok
        posts = rig.fake.calls_to("chat.postMessage")
        assert posts and all(p.at >= refreshes[0].at for p in posts)
        used = tokens_used(rig, "chat.postMessage", "chat.update")
        assert first not in used and used <= token_of(rig, rotating) - {first}
        sealer = Sealer(rig.settings.slack.token_encryption_key or "")
        stored = sealer.open(await redis_client.get(Keys(rig.settings.redis_prefix).installation(
            "slack", "-:T0ACME")) or "")
        assert next(iter(used)) in stored and first not in stored


async def test_an_enterprise_grid_org_wide_install_is_keyed_by_the_enterprise(
    base_env: dict[str, str], fake_llm: FakeLLM, redis_client: redis.Redis
) -> None:
    fake_llm.answer = Answer.of("Org answer.")
    org = Install(None, "Org", enterprise_id="E0ORG", bot_user_id="U0BOTORG", bot_id="B0ORG")
    async with oauth_rig(base_env, fake_llm) as rig:
        await rig.install(org)
        keys = Keys(rig.settings.redis_prefix)
        assert await installation_keys(redis_client, keys) == {keys.installation("slack", "E0ORG:-")}
        message = await rig.mention(org, "C9", ALICE.id, "hi", team="T0INORG")
        await rig.wait_answer(org, message, fake_llm.answer.text)
        assert tokens_used(rig, "chat.postMessage") <= token_of(rig, org)


def prompt_text(request: dict[str, object]) -> str:
    messages = request["messages"]
    assert isinstance(messages, list)
    return "\n".join(str(m.get("content", "")) for m in messages)


def _which(request: dict[str, object], acme_words: str) -> str:
    return "acme" if acme_words in prompt_text(request) else "globex"


async def test_two_workspaces_with_the_same_channel_and_thread_never_share_personas_or_histories(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("Noted.")
    async with oauth_rig(base_env, fake_llm) as rig:
        await rig.install(ACME)
        await rig.install(GLOBEX)
        set_reply = await rig.persona(ACME, "C1", ADMIN.id, "set You are Acme's pirate, arr.")
        assert set_reply.startswith("Done")

        # The same channel id and the same message ts in both workspaces.
        acme = await rig.mention(ACME, "C1", ALICE.id, "the acme secret is 41")
        globex_event = rig.fake.mention_event(GLOBEX, acme) | {
            "text": f"<@{GLOBEX.bot_user_id}> the globex secret is 97", "team": GLOBEX.team_id,
        }
        assert (await rig.deliver(GLOBEX, globex_event)).status == 200
        await rig.fake.wait_for(lambda: len(fake_llm.requests) == 2 and rig.engine.live_answers == 0, 10.0)
        first = {_which(r, "acme secret"): prompt_text(r) for r in fake_llm.requests}
        assert "pirate" in first["acme"] and "pirate" not in first["globex"]

        # A follow-up in each thread sees only its own workspace's conversation.
        for install, text in ((ACME, "and acme?"), (GLOBEX, "and globex?")):
            follow = rig.fake.user_message("C1", ALICE.id, text, thread_ts=acme.ts)
            event = rig.fake.event_for(follow) | {"team": install.team_id}
            assert (await rig.deliver(install, event)).status == 200
        await rig.fake.wait_for(lambda: len(fake_llm.requests) == 4 and rig.engine.live_answers == 0, 10.0)
        later = {_which(r, "and acme?"): prompt_text(r) for r in fake_llm.requests[2:]}
        assert "acme secret is 41" in later["acme"] and "globex secret" not in later["acme"]
        assert "globex secret is 97" in later["globex"] and "acme secret" not in later["globex"]
        assert "pirate" not in later["globex"]


async def test_answers_cut_by_a_restart_are_reached_with_the_workspaces_stored_token(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    """The core marks answers a crash cut through `surface_for`: after a restart the workspace is
    not built yet, so its token comes from its installation."""
    fake_llm.answer = Answer.of("Half an answer.")
    async with oauth_rig(base_env, fake_llm) as rig:
        await rig.install(ACME)
        message = await rig.mention(ACME, "C1", ALICE.id, "hi")
        await rig.wait_answer(ACME, message, fake_llm.answer.text)
        (answer,) = [m for m in rig.fake.thread("C1", message.ts) if m.bot_id == ACME.bot_id]
        rig.adapter.workspaces.drop(ACME.key)  # as after a restart

        conversation = ConversationKey("slack", "T0ACME", "C1", message.ts)
        surface = await rig.adapter.surface_for(conversation, answer.ts)
        assert surface is not None
        await surface.edit(answer.ts, "Half an answer. *Interrupted*")
        assert answer.visible == "Half an answer. *Interrupted*"
        assert rig.fake.calls_to("chat.update")[-1].token in token_of(rig, ACME)
        assert await rig.adapter.surface_for(ConversationKey("slack", "T0NOBODY", "C1", "1.0"), "1.0") is None


async def test_events_arriving_together_with_an_expiring_token_refresh_it_once(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    """Slack revokes a refresh token once used: two refreshes at once would lose an event."""
    fake_llm.answer = Answer.of("Both.")
    rotating = dataclasses.replace(ACME, token_lifetime=3600)
    async with oauth_rig(base_env, fake_llm) as rig:
        await rig.install(rotating)
        rig.fake.oauth.latency = 0.2  # the refresh is still on its way when the next events arrive
        text = f"<@{ACME.bot_user_id}> hi"
        messages = [rig.fake.user_message(channel, ALICE.id, text) for channel in ("C1", "C2", "C3")]
        events = [rig.fake.mention_event(rotating, message) for message in messages]
        replies = await asyncio.gather(*(rig.deliver(rotating, event) for event in events))
        assert [r.status for r in replies] == [200, 200, 200]
        for message in messages:
            await rig.wait_answer(rotating, message, fake_llm.answer.text)
        refreshes = [c for c in rig.fake.calls_to("oauth.v2.access") if c.params.get("grant_type")]
        assert len(refreshes) == 1 and refreshes[0].ok


async def test_a_refresh_lost_to_another_replica_is_retried_with_the_token_it_stored(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("Retried.")
    rotating = dataclasses.replace(ACME, token_lifetime=3600)
    async with oauth_rig(base_env, fake_llm) as rig:
        await rig.install(rotating)
        multi = rig.adapter.multi
        assert multi is not None
        stored = await multi.store.async_find_installation(enterprise_id=None, team_id="T0ACME")
        assert stored is not None and stored.bot_refresh_token

        async def other_replica_refreshes() -> None:  # it won the race: it stores the new token
            await rig.fake.wait_for(lambda: [c for c in rig.fake.calls_to("oauth.v2.access") if not c.ok])
            rotator = multi.authorize.token_rotator
            assert rotator is not None
            refreshed = await rotator.perform_token_rotation(installation=stored)
            assert refreshed is not None
            await multi.store.async_save(refreshed)

        rig.fake.fail_next("oauth.v2.access", "invalid_refresh_token")  # this replica's refresh loses
        other = asyncio.create_task(other_replica_refreshes())
        message = await rig.mention(rotating, "C1", ALICE.id, "hi")
        await rig.wait_answer(rotating, message, fake_llm.answer.text)
        await other
        lost, won = rig.fake.calls_to("oauth.v2.access")[-2:]
        assert lost.error == "invalid_refresh_token" and won.ok
        assert rig.fake.calls_to("chat.postMessage")[-1].token != stored.bot_token


async def test_a_workspaces_files_are_downloaded_with_its_own_token(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer = Answer.of("Read it.")
    async with oauth_rig(base_env, fake_llm) as rig:
        await rig.install(ACME)
        await rig.install(GLOBEX)
        log = rig.fake.add_file("app.log", b"ERROR disk full\n", "text/plain")
        text = f"<@{GLOBEX.bot_user_id}> what is wrong?"
        message = rig.fake.user_message("C1", ALICE.id, text, files=[log])
        assert (await rig.deliver(GLOBEX, rig.fake.mention_event(GLOBEX, message))).status == 200
        await rig.wait_answer(GLOBEX, message, fake_llm.answer.text)
        assert "ERROR disk full" in prompt_text(fake_llm.requests[-1])
        assert rig.fake.downloads == [(log.id, True)]
        assert set(rig.fake.download_tokens) <= token_of(rig, GLOBEX)
