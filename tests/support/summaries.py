"""A fake model's answers for summary tests: each cites the messages it was given."""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.fakes.llm import Answer, FakeLLM


def cited(asked: str) -> list[str]:
    """The message numbers in a request's text ("[3] Ana: …", or a part's "… [3]")."""
    return re.findall(r"\[(\d+)\]", asked)


def model_citing(extra: str = "", **answer: float) -> Callable[[str], Answer]:
    """Each part's summary cites its first and last message; the combined one (the parts' summaries)
    the first and last it was given, then `extra` (a made-up citation, say)."""
    def script(asked: str) -> Answer:
        numbers = cited(asked)
        combined = extra if asked.startswith("Part 1:") else ""
        text = f"- a point [{numbers[0]}] and another [{numbers[-1]}]{combined}" if numbers else "- nothing"
        return Answer.of(text, **answer)  # type: ignore[arg-type]
    return script


def every_request(llm: FakeLLM) -> str:
    """Everything the model was given, every request's messages joined."""
    return "\n".join(m["content"] for r in llm.requests for m in r["messages"])
