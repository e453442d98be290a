"""The fake Slack speaks the protocol the real slack_sdk and slack-bolt expect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import FakeSlack
from tests.fakes.slack_events import SignedSender
from tests.fakes.slack_state import User


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as slack:
        yield slack


def client_for(fake: FakeSlack, token: str = "xoxb-test") -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=fake.api_url)


async def test_web_api_keeps_messages_and_threads(fake: FakeSlack) -> None:
    client = client_for(fake)
    auth = await client.auth_test()
    assert (auth["user_id"], auth["bot_id"], auth["team_id"]) == ("U0BOT", "B0BOT", "T0FAKE")

    root = fake.user_message("C1", "U1", "<@U0BOT> hello")
    posted = await client.chat_postMessage(channel="C1", thread_ts=root.ts, markdown_text="**first**")
    await client.chat_update(channel="C1", ts=posted["ts"], markdown_text="**first** second")
    assert fake.seen_text("C1", root.ts) == "**first** second"

    replies = await client.conversations_replies(channel="C1", ts=root.ts)
    assert [m["text"] for m in replies["messages"]] == ["<@U0BOT> hello", "**first** second"]
    assert replies["messages"][1]["bot_id"] == "B0BOT"
    assert [c.method for c in fake.calls] == [
        "auth.test",
        "chat.postMessage",
        "chat.update",
        "conversations.replies",
    ]
    assert fake.calls[1].params["markdown_text"] == "**first**"
    assert "token" not in fake.calls[1].params


async def test_conversations_replies_pages(fake: FakeSlack) -> None:
    root = fake.user_message("C1", "U1", "root")
    for i in range(4):
        fake.user_message("C1", "U1", f"reply {i}", thread_ts=root.ts)
    client = client_for(fake)
    first = await client.conversations_replies(channel="C1", ts=root.ts, limit=3)
    assert first["has_more"] is True
    cursor = first["response_metadata"]["next_cursor"]
    second = await client.conversations_replies(channel="C1", ts=root.ts, limit=3, cursor=cursor)
    texts = [m["text"] for m in first["messages"] + second["messages"]]
    assert texts == ["root", "reply 0", "reply 1", "reply 2", "reply 3"]


async def test_users_reactions_and_status(fake: FakeSlack) -> None:
    fake.add_user(User("U1", "ada", real_name="Ada Lovelace", display_name="ada", is_admin=True))
    client = client_for(fake)
    info = await client.users_info(user="U1")
    assert info["user"]["is_admin"] is True
    assert info["user"]["profile"]["display_name"] == "ada"
    with pytest.raises(SlackApiError) as missing:
        await client.users_info(user="U404")
    assert missing.value.response["error"] == "user_not_found"

    msg = fake.user_message("C1", "U1", "hi")
    await client.reactions_add(channel="C1", timestamp=msg.ts, name="eyes")
    assert fake.reactions[("C1", msg.ts)] == {"eyes"}
    await client.reactions_remove(channel="C1", timestamp=msg.ts, name="eyes")
    assert fake.reactions[("C1", msg.ts)] == set()

    await client.assistant_threads_setStatus(channel_id="C1", thread_ts=msg.ts, status="is thinking…")
    assert fake.statuses[-1].status == "is thinking…"


async def test_tokens_are_checked(fake: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as bad:
        await client_for(fake, "xoxb-test-wrong").auth_test()
    assert bad.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as wrong_kind:
        await client_for(fake, "xoxb-test").apps_connections_open(app_token="xoxb-test")
    assert wrong_kind.value.response["error"] == "not_allowed_token_type"
    opened = await client_for(fake).apps_connections_open(app_token="xapp-test")
    assert opened["url"].startswith(f"ws://127.0.0.1:{fake.port}/")


async def test_rate_limits_answer_like_slack(fake: FakeSlack) -> None:
    fake.enforce_limits(update_limit=2, update_per=60.0, post_limit=1, post_per=1.0)
    client = client_for(fake)
    root = fake.user_message("C1", "U1", "hi")
    posted = await client.chat_postMessage(channel="C1", thread_ts=root.ts, markdown_text="a")
    with pytest.raises(SlackApiError) as post_limited:
        await client.chat_postMessage(channel="C1", thread_ts=root.ts, markdown_text="b")
    assert post_limited.value.response.status_code == 429
    assert post_limited.value.response.headers["Retry-After"] == "1"
    assert post_limited.value.response["error"] == "ratelimited"
    # Another channel has its own postMessage window.
    await client.chat_postMessage(channel="C2", markdown_text="c")

    await client.chat_update(channel="C1", ts=posted["ts"], markdown_text="a1")
    await client.chat_update(channel="C1", ts=posted["ts"], markdown_text="a2")
    with pytest.raises(SlackApiError) as update_limited:
        await client.chat_update(channel="C1", ts=posted["ts"], markdown_text="a3")
    assert update_limited.value.response.status_code == 429
    assert 59 <= int(update_limited.value.response.headers["Retry-After"]) <= 60
    assert fake.seen_text("C1", root.ts) == "a2"
    assert [c.status for c in fake.calls_to("chat.update")] == [200, 200, 429]


async def test_length_limits_and_injected_errors(fake: FakeSlack) -> None:
    client = client_for(fake)
    with pytest.raises(SlackApiError) as too_long:
        await client.chat_postMessage(channel="C1", text="x" * 4001)
    assert too_long.value.response["error"] == "msg_too_long"
    await client.chat_postMessage(channel="C1", markdown_text="x" * 12_000)
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel="C1", markdown_text="x" * 12_001)
    with pytest.raises(SlackApiError) as both:
        await client.chat_postMessage(channel="C1", text="t", markdown_text="m")
    assert both.value.response["error"] == "invalid_arguments"

    fake.fail_next("chat.update", "ratelimited", retry_after=3)
    fake.fail_next("chat.postMessage", "channel_not_found")
    with pytest.raises(SlackApiError) as injected:
        await client.chat_postMessage(channel="C1", markdown_text="m")
    assert injected.value.response["error"] == "channel_not_found"
    await client.chat_postMessage(channel="C1", markdown_text="m")  # only the next one failed


async def test_native_stream_with_the_sdk_helper_and_expiry(fake: FakeSlack) -> None:
    client = client_for(fake)
    root = fake.user_message("C1", "U1", "<@U0BOT> stream please")
    stream = await client.chat_stream(
        channel="C1",
        thread_ts=root.ts,
        recipient_user_id="U1",
        recipient_team_id="T0FAKE",
        buffer_size=1,
    )
    await stream.append(markdown_text="Hello ")
    await stream.append(markdown_text="**world**")
    await stream.stop()
    assert fake.seen_text("C1", root.ts) == "Hello **world**"
    assert [c.method for c in fake.writes()] == [
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
    ]

    expiring = await client.chat_stream(
        channel="C1",
        thread_ts=root.ts,
        recipient_user_id="U1",
        recipient_team_id="T0FAKE",
        buffer_size=1,
    )
    await expiring.append(markdown_text="part")
    fake.expire_streams()
    with pytest.raises(SlackApiError) as expired:
        await expiring.append(markdown_text=" more")
    assert expired.value.response["error"] == "message_not_in_streaming_state"
    assert expiring.ts is not None
    await client.chat_update(channel="C1", ts=expiring.ts, markdown_text="part more")
    assert fake.bot_replies("C1", root.ts)[-1].visible == "part more"

    with pytest.raises(SlackApiError) as no_recipient:
        await client.chat_startStream(channel="C1", thread_ts=root.ts, markdown_text="x")
    assert no_recipient.value.response["error"] == "invalid_arguments"


async def test_socket_mode_with_real_bolt(fake: FakeSlack) -> None:
    app = AsyncApp(token="xoxb-test", client=client_for(fake))
    mentions: list[dict[str, Any]] = []

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: Any) -> None:
        mentions.append(event)
        await say(text="hi back", thread_ts=event["ts"])

    @app.command("/persona")
    async def on_persona(ack: Any, respond: Any, command: dict[str, Any]) -> None:
        await ack(text="working on it")
        await respond(text=f"you said {command['text']}", response_type="ephemeral")

    handler = AsyncSocketModeHandler(app, app_token="xapp-test")
    await handler.connect_async()  # type: ignore[no-untyped-call]
    try:
        await fake.wait_for(lambda: fake.connected == 1)
        assert fake.connections_opened == 1

        msg = fake.user_message("C1", "U1", "<@U0BOT> hi")
        envelope = await fake.push_event(fake.event_for(msg, kind="app_mention"))
        ack = await fake.wait_ack(envelope)
        assert ack.payload in (None, {})
        await fake.wait_for(lambda: fake.bot_replies("C1", msg.ts))
        assert fake.seen_text("C1", msg.ts) == "hi back"
        assert mentions[0]["text"] == "<@U0BOT> hi"

        command = await fake.push_command("show", user="U1", channel="C1")
        command_ack = await fake.wait_ack(command)
        assert command_ack.payload == {"text": "working on it"}
        response = await fake.wait_for(lambda: fake.responses)
        assert response[0].body["text"] == "you said show"
        assert response[0].body["response_type"] == "ephemeral"
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]


async def test_signed_http_deliveries_with_real_bolt(fake: FakeSlack) -> None:
    app = AsyncApp(token="xoxb-test", signing_secret="test-secret", client=client_for(fake))
    seen: list[str] = []

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any]) -> None:
        seen.append(event["ts"])

    async def handle(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    web_app = web.Application()
    web_app.router.add_post("/slack/events", handle)
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sender = SignedSender(f"http://127.0.0.1:{port}/slack/events", "test-secret")
    try:
        msg = fake.user_message("C1", "U1", "<@U0BOT> hi")
        body = fake.callback(fake.event_for(msg, kind="app_mention"))
        assert (await sender.send_event(body, forge=True)).status == 401
        assert (await sender.send_event(body, age=6 * 60)).status == 401
        assert seen == []
        good = await sender.send_event(body, retry_num=1)
        assert good.status == 200
        await fake.wait_for(lambda: seen)
        assert seen == [msg.ts]
    finally:
        await sender.close()
        await runner.cleanup()
