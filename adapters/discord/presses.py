"""Presses on an answer's buttons (Stop, 👍/👎) and the 👎 reason form, answered for the core.

Discord signs the interaction (it comes over the bot's own gateway session): the presser is
`interaction.user`, the answer the custom id the bot wrote. Each press is claimed once across
replicas and answered at once (Discord's window is 3 s).
"""

from __future__ import annotations

import discord

from adapters.discord.surface import (
    APPROVE,
    DENY,
    PLATFORM,
    REASON,
    REASON_INPUT,
    STOP,
    parse_control,
    reason_modal,
    submitted_text,
)
from bot.contract import VOTE_DOWN, Author, Core


async def answer_press(core: Core, interaction: discord.Interaction, *, can_admin: bool) -> None:
    """`can_admin`: the presser administers the channel (may stop anyone's answer)."""
    custom_id = interaction.data.get("custom_id") if interaction.data else None
    control = parse_control(str(custom_id or ""))
    if control is None or not await core.claim(PLATFORM, str(interaction.id)):
        return
    kind, answer_id = control
    actor = Author(str(interaction.user.id), interaction.user.display_name)
    if kind == STOP:
        pressed = await core.stop(answer_id, actor, can_admin=can_admin)
    elif kind in (APPROVE, DENY):
        pressed = await core.approve(answer_id, actor, kind == APPROVE)
    elif kind == REASON:
        components = interaction.data.get("components") if interaction.data else None
        reason = submitted_text(components if isinstance(components, list) else [], REASON_INPUT)
        pressed = await core.feedback(answer_id, actor, VOTE_DOWN, reason=reason)
    else:
        pressed = await core.feedback(answer_id, actor, kind)
        if pressed.ask_reason:
            await interaction.response.send_modal(reason_modal(answer_id))  # the answer to the press
            return
    if pressed.message:
        await interaction.response.send_message(pressed.message, ephemeral=True)
    else:
        await interaction.response.defer()  # a component's: "deferred update", nothing shown
