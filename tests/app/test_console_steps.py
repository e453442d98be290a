"""The console's terminal surface: an answer's tool steps (the section the core writes at the top
of the text, bot/tools/loop.py) shown as one dim line each above the answer, rendered by rich."""

from __future__ import annotations

import io

from rich.console import Console

from adapters.console.surfaces import MarkdownStream, TerminalSurface, split_steps


def terminal() -> tuple[TerminalSurface, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=80, height=40)
    return TerminalSurface(MarkdownStream(console)), out


def steps_section(*lines: str) -> str:
    """As `bot.tools.loop.ToolUse.section` writes it (tests/tools/test_tool_turns.py pins that)."""
    return "\n".join(lines) + "\n\n"


async def test_each_step_is_one_dim_line_above_the_answer() -> None:
    surface, out = terminal()
    message = await surface.post(steps_section("_Looking up an order (A\\_1001)…_"))  # running, no answer yet
    steps = steps_section("_Looking up an order (A\\_1001)… done_", "_slow… timed out_")
    await surface.edit(message, steps + "It is **shipped**.")
    surface.stream.close()
    shown = out.getvalue()
    # Dim (SGR 2), not italic (SGR 3); the escaped underscore shown as itself; each step its own line.
    assert "\x1b[2mLooking up an order (A_1001)…\x1b[0m" in shown
    assert "\x1b[2mLooking up an order (A_1001)… done\x1b[0m\n\x1b[2mslow… timed out\x1b[0m\n" in shown
    assert "\x1b[3m" not in shown and "_Looking" not in shown
    assert shown.index("slow… timed out") < shown.index("shipped")  # above the answer
    assert "\x1b[1mshipped\x1b[0m" in shown  # the answer is still Markdown


def test_only_a_section_of_step_lines_is_taken_for_steps() -> None:
    assert split_steps("_Fetching… done_\n_Fetching (x)…_\n\nAnswer") == (
        ["Fetching… done", "Fetching (x)…"], "Answer")
    # An answer that merely starts in italics, or a step-like line with no blank line after it,
    # stays the answer's own Markdown.
    for text in ("_Note: this is italic_\n\nAnswer", "_Wait…_ then more\n\nA", "_Thinking…_", "Plain"):
        assert split_steps(text) == ([], text)
