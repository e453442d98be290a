"""Tools on the platforms, end to end: the real slack-bolt (update mode) and discord.py against the
fakes, the fake model calling the SDK-built MCP server over stdio."""

from __future__ import annotations

from pathlib import Path

from adapters.slack.mentions import SAFE_ANGLE, SAFE_AT
from tests.fakes.discord import pings_anyone
from tests.fakes.discord_payloads import MANAGE_CHANNELS
from tests.fakes.llm import Answer, FakeLLM
from tests.support.discord_fixtures import World, bot_env, fake_discord, running_bot, world
from tests.support.helpers import wait_until
from tests.support.slack_fixtures import ADMIN, ALICE, BOT, slack_rig
from tests.tools.servers import config_file, tool_env, tool_settings

__all__ = ["fake_discord", "world"]  # fixtures used by name


def loud_then_echo(asked: str) -> Answer:
    """Calls `lookup_order` and `loud`, then repeats the results (as a model quoting them might)."""
    if "Order" in asked or "everyone" in asked:
        return Answer.of("Found: Hey <!channel> and @everyone, look")
    return Answer(tokens=[], tool_calls=[("orders__lookup_order", '{"order_id": "A-1001"}'),
                                         ("orders__loud", "{}")])


async def test_slack_shows_the_steps_and_defuses_what_a_result_carried(
    base_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path
) -> None:
    fake_llm.script = loud_then_echo
    async with slack_rig(base_env, fake_llm, **tool_settings(tmp_path)) as rig:
        asked = await rig.say("C1", ALICE, f"<@{BOT}> where is A-1001?")
        await rig.fake.wait_for(lambda: "Found" in rig.fake.seen_text("C1", asked.ts), 20.0)
        await rig.idle()
        (reply,) = rig.fake.bot_replies("C1", asked.ts)
        assert reply.text.startswith("_Looking up an order (A-1001)… done_\n_loud… done_\n\nFound:")
        # What the result carried reached Slack inert: no broadcast token, no bare @everyone.
        assert "<!channel>" not in reply.text and "@everyone" not in reply.text
        assert f"{SAFE_ANGLE}!channel>" in reply.text and f"{SAFE_AT}everyone" in reply.text


async def test_discord_shows_the_steps_and_never_pings(
    world: World, fake_llm: FakeLLM, base_env: dict[str, str], tmp_path: Path
) -> None:
    fake_llm.script = loud_then_echo
    env = tool_env(bot_env(base_env, world.fake, fake_llm), tmp_path)
    async with running_bot(world, fake_llm, env) as rig:
        fake, w = rig.fake, rig.world
        await fake.user_message(w.general, w.alice, f"{fake.bot.mention} where is A-1001?")
        await wait_until(lambda: "Found" in fake.bot_text(w.general), timeout=20)
        await wait_until(lambda: rig.engine.live_answers == 0, timeout=10)
        (reply,) = fake.bot_messages(w.general)
        assert reply["content"].startswith("_Looking up an order (A-1001)… done_\n_loud… done_\n\nFound:")
        writes = fake.writes(w.general)
        assert writes and not any(pings_anyone(c.json, is_reply=c.method == "POST") for c in writes)


async def test_slack_persona_tools_as_a_text_command(
    base_env: dict[str, str], fake_llm: FakeLLM, tmp_path: Path
) -> None:
    async with slack_rig(base_env, fake_llm, MCP_CONFIG=config_file(tmp_path)) as rig:
        refused = await rig.command("tools orders", user=ALICE, channel="C1")
        assert "only" in refused["text"].lower()
        done = await rig.command("tools orders", user=ADMIN, channel="C1")
        assert "tools is now `orders`" in done["text"]
        shown = await rig.command("show", user=ALICE, channel="C1")
        assert "`orders`: `lookup_order`" in shown["text"]


async def test_discord_persona_tools_as_a_slash_command(
    world: World, fake_llm: FakeLLM, base_env: dict[str, str], tmp_path: Path
) -> None:
    env = bot_env(base_env, world.fake, fake_llm) | {"MCP_CONFIG": config_file(tmp_path)}
    async with running_bot(world, fake_llm, env) as rig:
        fake, w = rig.fake, rig.world
        fake.grant(w.guild, w.alice, MANAGE_CHANNELS)
        done = await fake.slash_command(w.alice, w.general, "persona", subcommand="tools",
                                        options={"servers": "all"})
        assert "tools is now `all`" in await done.answered()
        shown = await fake.slash_command(w.bob, w.general, "persona", subcommand="show")
        assert "`orders`: `lookup_order`" in await shown.answered()
        wrong = await fake.slash_command(w.alice, w.general, "persona", subcommand="tools",
                                         options={"servers": "payroll"})
        assert "There is no tool server `payroll`" in await wrong.answered()
