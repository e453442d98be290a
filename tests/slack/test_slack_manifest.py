"""deploy/slack/manifest.yml asks for exactly what the adapter uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapters.slack.commands import FORGET_SHORTCUT
from adapters.slack.summaries import SHORTCUT as SUMMARIZE_SHORTCUT
from tests.fakes.llm import Answer, FakeLLM
from tests.support.slack_fixtures import ALICE, BOB, BOT, slack_rig

MANIFEST = (Path(__file__).parents[2] / "deploy" / "slack" / "manifest.yml").read_text()

# Which bot scope each Web API method needs (conversations.replies: by channel type).
SCOPES = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.delete": "chat:write",
    "chat.postEphemeral": "chat:write",
    "chat.startStream": "chat:write",
    "chat.appendStream": "chat:write",
    "chat.stopStream": "chat:write",
    "assistant.threads.setStatus": "chat:write",
    "reactions.add": "reactions:write",
    "reactions.remove": "reactions:write",
    "users.info": "users:read",
    "assistant.threads.setSuggestedPrompts": "assistant:write",
    "assistant.threads.setTitle": "assistant:write",
    "files.info": "files:read",
}
INFO = {"C": "channels:read", "G": "groups:read"}  # conversations.info, by channel type
HISTORY = {"C": "channels:history", "G": "groups:history", "D": "im:history"}
# Any token / the app-level token / a trigger / any token again.
NO_SCOPE = {"auth.test", "apps.connections.open", "views.open", "chat.getPermalink"}


def listed(section: str) -> set[str]:
    """The `- item` entries under a `section:` key (enough YAML for this file)."""
    match = re.search(rf"^(\s*){section}:\n((?:\1\s+- .*\n)+)", MANIFEST, re.MULTILINE)
    assert match, f"{section} not found in the manifest"
    return {line.split("- ", 1)[1].split("#")[0].strip() for line in match.group(2).splitlines()}


def test_manifest_events_command_shortcut_and_socket_mode() -> None:
    assert listed("bot_events") == {
        "app_mention",
        "message.channels",
        "message.groups",
        "message.im",
        "assistant_thread_started",
        "assistant_thread_context_changed",
        "app_uninstalled",
        "tokens_revoked",
    }
    assert "assistant_view:" in MANIFEST  # the assistant panel (Slack's AI app surface)
    assert "is_enabled: true" in MANIFEST  # interactivity: Stop, feedback, the reason modal
    assert "command: /persona" in MANIFEST
    assert f"callback_id: {FORGET_SHORTCUT}" in MANIFEST
    assert "command: /summarize" in MANIFEST
    assert f"callback_id: {SUMMARIZE_SHORTCUT}" in MANIFEST
    assert "socket_mode_enabled: true" in MANIFEST
    assert "messages_tab_enabled: true" in MANIFEST  # people can DM the bot


def test_every_scope_is_explained_in_the_docs() -> None:
    """docs/slack.md says why the bot asks for each scope: an admin reviewing the install reads
    it there, not in a comment of the manifest."""
    docs = (Path(__file__).parents[2] / "docs" / "slack.md").read_text()
    table = docs.split("### The scopes, and why each", 1)[1].split("\n### ", 1)[0]
    explained = set(re.findall(r"^\| `([a-z_.:]+)` \|", table, re.MULTILINE))
    assert explained == listed("bot"), "docs/slack.md's scope table and the manifest differ"


@pytest.mark.long
async def test_every_call_the_adapter_makes_is_covered_by_a_scope(
    base_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    scopes = listed("bot")
    fake_llm.answer = Answer.of("Fine.", first_token_delay=0.5)  # slow enough for a status
    async with slack_rig(base_env, fake_llm) as rig:
        rig.fake.fail_next("assistant.threads.setStatus", "missing_scope")  # reaction fallback
        for channel in ("C1", "G1"):
            root = await rig.say(channel, ALICE, f"<@{BOT}> hi <@{BOB.id}>")
            await rig.wait_reply(root, "Fine.")
            await rig.say(channel, BOB, "more", thread_ts=root.ts)
            await rig.wait_reply(root, "Fine.Fine.")
            await rig.say(channel, ALICE, f"<@{BOT}> forget", thread_ts=root.ts)
        dm = await rig.say("D1", ALICE, "hello")
        await rig.wait_reply(dm, "Fine.")
        shared = rig.fake.user_message("D1", ALICE.id, "read this", files=[rig.fake.add_file("a.txt", b"hi")])
        for event in rig.fake.events_for(shared):
            await rig.deliver(event)
        await rig.wait_reply(shared, "Fine.")
        await rig.say("D1", ALICE, "again", thread_ts=dm.ts)
        await rig.wait_reply(dm, "Fine.Fine.")
        await rig.command("use pirate", user=ALICE, channel="C1")
        await rig.fake.wait_for(lambda: len(rig.fake.ephemeral) == 2)
        # The assistant panel, looking at a public then a private channel, and a 👎 with its form.
        for channel in ("C1", "G1"):
            rig.fake.channel_info[channel] = {"name": channel.lower(), "topic": {"value": "t"}}
        root, started = rig.fake.assistant_thread(ALICE.id, "D2", looking_at="C1")
        await rig.deliver(started)
        await rig.wait_looking_at("D2", root.ts, "C1")
        asked = await rig.say("D2", ALICE, "what is this channel?", thread_ts=root.ts)
        await rig.fake.wait_for(lambda: rig.engine.live_answers == 0 and rig.fake.bot_replies("D2", root.ts))
        await rig.deliver(rig.fake.assistant_event("assistant_thread_context_changed", ALICE.id, root, "G1"))
        await rig.wait_looking_at("D2", root.ts, "G1")
        await rig.say("D2", ALICE, "and this one?", thread_ts=root.ts)
        await rig.fake.wait_for(lambda: len(rig.fake.calls_to("conversations.info")) == 2)
        await rig.idle()
        reply = rig.fake.bot_replies("D2", root.ts)[-1]
        down = next(
            str(e["negative_button"]["value"]) for b in reply.blocks or [] for e in b.get("elements") or []
            if e.get("type") == "feedback_buttons"
        )
        await rig.fake.wait_ack(await rig.fake.press(reply, "chatbot_feedback", user=ALICE.id, value=down))
        await rig.fake.wait_for(lambda: rig.fake.views)
        assert asked.ts

        needed: set[str] = set()
        for call in rig.fake.calls:
            if call.method in ("conversations.replies", "conversations.history"):
                needed.add(HISTORY[call.params["channel"][0]])
            elif call.method == "conversations.info":
                needed.add(INFO[call.params["channel"][0]])
            elif call.method not in NO_SCOPE:
                needed.add(SCOPES[call.method])
        if rig.fake.downloads:  # url_private with the bot token
            needed.add("files:read")
        # The subscriptions need their own scopes: app_mention, message.* per channel type,
        # and the /persona command with its shortcut.
        needed |= {"app_mentions:read", "commands", *HISTORY.values()}
        assert needed == scopes
