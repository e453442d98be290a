"""An answer's buttons in Slack: Stop while it streams, 👍/👎 once finished.

A message with buttons is sent as blocks: the answer in one `markdown` block (the same
Markdown `markdown_text` takes, which Slack does not allow next to blocks), then an
`actions` block with the Stop button, or the `context_actions` block with
`feedback_buttons` that Slack's AI apps use. `text` is the notification's fallback.
A press comes back as a `block_actions` payload naming the `action_id` and the button's
`value`, which carries the answer id (see docs/slack.md, "Stop and feedback").
"""

from __future__ import annotations

from typing import Any

from bot.contract import VOTE_DOWN, VOTE_UP, Controls

STOP_ACTION = "chatbot_stop"
FEEDBACK_ACTION = "chatbot_feedback"
APPROVE_ACTION, DENY_ACTION = "chatbot_tool_approve", "chatbot_tool_deny"  # value: the approval id
FALLBACK_CHARS = 300  # the notification text: Slack shows the first line or so anyway


def message_fields(markdown: str, controls: Controls | None) -> dict[str, Any]:
    """The chat.postMessage / chat.update fields showing `markdown` with `controls`."""
    if controls is None or not (controls.stop or controls.feedback or controls.approval):
        return {"markdown_text": markdown}
    blocks: list[dict[str, Any]] = [{"type": "markdown", "text": markdown}]
    if controls.approval:
        blocks.append(approval_block(controls.answer_id))
    elif controls.stop:
        blocks.append(stop_block(controls.answer_id))
    elif controls.feedback:
        blocks.append(feedback_block(controls.answer_id))
    return {"blocks": blocks, "text": markdown[:FALLBACK_CHARS] or " "}


def stop_block(answer_id: str) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": f"stop:{answer_id}",
        "elements": [
            {
                "type": "button",
                "action_id": STOP_ACTION,
                "text": {"type": "plain_text", "text": "Stop"},
                "value": answer_id,
            }
        ],
    }


def approval_block(approval_id: str) -> dict[str, Any]:
    """Approve and Deny of a tool call (bot/tools/approval.py)."""
    return {
        "type": "actions",
        "block_id": f"approval:{approval_id}",
        "elements": [
            {"type": "button", "action_id": APPROVE_ACTION, "style": "primary",
             "text": {"type": "plain_text", "text": "Approve"}, "value": approval_id},
            {"type": "button", "action_id": DENY_ACTION, "style": "danger",
             "text": {"type": "plain_text", "text": "Deny"}, "value": approval_id},
        ],
    }


def feedback_block(answer_id: str) -> dict[str, Any]:
    return {
        "type": "context_actions",
        "block_id": f"feedback:{answer_id}",
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION,
                "positive_button": {
                    "text": {"type": "plain_text", "text": "👍"},
                    "accessibility_label": "This answer helped",
                    "value": f"{VOTE_UP}:{answer_id}",
                },
                "negative_button": {
                    "text": {"type": "plain_text", "text": "👎"},
                    "accessibility_label": "This answer did not help",
                    "value": f"{VOTE_DOWN}:{answer_id}",
                },
            }
        ],
    }


def feedback_value(value: str) -> tuple[str, str] | None:
    """("up" | "down", answer id) from a feedback button's value; None if it is not one."""
    kind, _, answer_id = value.partition(":")
    if kind not in (VOTE_UP, VOTE_DOWN) or not answer_id:
        return None
    return kind, answer_id
