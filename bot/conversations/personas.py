"""Per-channel personas: a system prompt plus optional model settings.

A channel without a persona gets the default one from the settings
(`BOT_SYSTEM_PROMPT`, `BOT_MODEL`, …). Personas are kept in Redis with no TTL.
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass, replace
from importlib import resources

from bot.config import ModelSettings
from bot.contract import ChannelScope
from bot.state.interface import PersonaState


@dataclass(frozen=True)
class Persona:
    system_prompt: str
    preset: str = ""
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    reasoning: bool | None = None
    vision: bool | None = None  # None: the model's default (bot.files.attachments.takes_images)
    # The models after `model` (bot.model.fallback); None: BOT_FALLBACK_MODELS.
    fallback: tuple[str, ...] | None = None
    summary_prompt: str = ""  # added to the system prompt for summaries (`/persona summary`)
    tools: str | None = None  # the MCP servers it may use: "off", "all" or "a,b"; None: BOT_TOOLS
    set_by: str = ""
    set_at: float = 0.0
    description: str = ""
    prompts: tuple[str, ...] = ()  # suggested prompts (Slack's assistant panel); presets only

    def to_hash(self) -> dict[str, str]:
        fields = {
            "system_prompt": self.system_prompt,
            "preset": self.preset,
            "model": self.model or "",
            "temperature": "" if self.temperature is None else repr(self.temperature),
            "max_tokens": "" if self.max_tokens is None else str(self.max_tokens),
            "reasoning": "" if self.reasoning is None else ("on" if self.reasoning else "off"),
            "vision": "" if self.vision is None else ("on" if self.vision else "off"),
            "fallback": "" if self.fallback is None else (",".join(self.fallback) or "off"),
            "summary_prompt": self.summary_prompt,
            "tools": self.tools or "",
            "set_by": self.set_by,
            "set_at": repr(self.set_at),
        }
        return fields

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Persona:
        def number(name: str) -> float | None:
            try:
                return float(data[name]) if data.get(name) else None
            except ValueError:
                return None

        max_tokens = number("max_tokens")
        reasoning = data.get("reasoning")
        vision = data.get("vision")
        fallback = data.get("fallback")
        return cls(
            system_prompt=data.get("system_prompt", ""),
            preset=data.get("preset", ""),
            model=data.get("model") or None,
            temperature=number("temperature"),
            max_tokens=int(max_tokens) if max_tokens else None,
            reasoning=None if not reasoning else reasoning == "on",
            vision=None if not vision else vision == "on",
            fallback=None if not fallback else tuple(m for m in fallback.split(",") if m != "off" and m),
            summary_prompt=data.get("summary_prompt", ""),
            tools=data.get("tools") or None,
            set_by=data.get("set_by", ""),
            set_at=number("set_at") or 0.0,
        )

    def stamped(self, who: str) -> Persona:
        return replace(self, set_by=who, set_at=time.time())


def load_presets() -> dict[str, Persona]:
    text = resources.files("bot").joinpath("presets.toml").read_text(encoding="utf-8")
    presets = {}
    for name, data in tomllib.loads(text).items():
        presets[name] = Persona(
            system_prompt=data["system_prompt"].strip(),
            preset=name,
            model=data.get("model"),
            temperature=data.get("temperature"),
            max_tokens=data.get("max_tokens"),
            reasoning=data.get("reasoning"),
            vision=data.get("vision"),
            description=data.get("description", ""),
            prompts=tuple(str(p) for p in data.get("prompts") or ()),
        )
    return presets


@dataclass(frozen=True)
class ModelParams:
    """What one request to the model uses, after persona and defaults are merged."""

    model: str
    temperature: float | None
    max_tokens: int
    reasoning: bool
    vision: bool | None  # None: as the model's default (the engine asks bot.files.attachments)


def effective(persona: Persona, defaults: ModelSettings) -> ModelParams:
    return ModelParams(
        model=persona.model or defaults.model,
        temperature=persona.temperature if persona.temperature is not None else defaults.temperature,
        max_tokens=persona.max_tokens or defaults.max_tokens,
        reasoning=persona.reasoning if persona.reasoning is not None else defaults.reasoning,
        vision=persona.vision,
    )


class PersonaStore:
    """Personas by channel, over the store (`bot.state.interface.Store`)."""

    def __init__(self, store: PersonaState, default: Persona) -> None:
        self._store = store
        self.default = default

    async def get(self, scope: ChannelScope) -> Persona:
        return self.parse(await self._store.persona(scope))

    def parse(self, data: dict[str, str]) -> Persona:
        """A channel's persona from its stored hash (read elsewhere, in a shared round trip)."""
        return Persona.from_hash(data) if data.get("system_prompt") else self.default

    async def save(self, scope: ChannelScope, persona: Persona) -> None:
        await self._store.save_persona(scope, persona.to_hash())

    async def reset(self, scope: ChannelScope) -> None:
        await self._store.reset_persona(scope)
