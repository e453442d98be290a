"""Model providers: Together (the default) and any OpenAI-compatible API named in the settings.

A model written `name:model` (`openrouter:qwen/qwen3-8b`) is asked of the provider
`PROVIDER_<NAME>_BASE_URL` names, with its `PROVIDER_<NAME>_API_KEY`; a model without
a prefix (or with `together:`) is Together's. One pooled client per provider, made
at start and shared by every conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bot.clock import Clock
from bot.config import TOGETHER, ModelSettings, ProviderSettings
from bot.model.llm import LLMClient


@dataclass(frozen=True)
class ModelRef:
    """One model of one provider."""

    spec: str  # as written in the settings or a persona: the name shown and counted
    provider: str  # "together" or a configured provider's name
    name: str  # what the provider calls it (the request's `model`)


def model_ref(spec: str, providers: set[str] | frozenset[str]) -> ModelRef:
    """`spec` split into provider and model; a prefix that names no configured provider is part of
    the model's own name (config and `/persona` refuse the ones that look like a provider typo)."""
    prefix, colon, rest = spec.partition(":")
    if colon and rest and prefix.lower() in providers | {TOGETHER}:
        return ModelRef(spec, prefix.lower(), rest)
    return ModelRef(spec, TOGETHER, spec)


def key_variable(provider: str) -> str:
    """The setting an operator fixes when `provider` refuses its key."""
    return "TOGETHER_API_KEY" if provider == TOGETHER else f"PROVIDER_{provider.upper()}_API_KEY"


def url_variable(provider: str) -> str:
    """The setting that says where `provider`'s API is."""
    return "TOGETHER_BASE_URL" if provider == TOGETHER else f"PROVIDER_{provider.upper()}_BASE_URL"


class Providers:
    """The client of each provider. Together's is the one the engine was given."""

    def __init__(
        self, together: LLMClient, extra: tuple[ProviderSettings, ...], clock: Clock | None = None
    ) -> None:
        self.clients: dict[str, LLMClient] = {TOGETHER: together}
        self.settings: dict[str, ProviderSettings] = {}
        self._owned: list[LLMClient] = []
        for provider in extra:
            settings: ModelSettings = replace(together.settings, base_url=provider.base_url,
                                              api_key=provider.api_key)
            client = LLMClient(settings, clock=clock or together.clock)
            self.clients[provider.name] = client
            self.settings[provider.name] = provider
            self._owned.append(client)
        self.names = frozenset(self.clients) - {TOGETHER}

    def ref(self, spec: str) -> ModelRef:
        return model_ref(spec, self.names)

    def client(self, ref: ModelRef) -> LLMClient:
        return self.clients[ref.provider]

    def base_url(self, provider: str) -> str:
        return self.clients[provider].settings.base_url

    async def aclose(self) -> None:
        """Close the clients made here (Together's belongs to whoever made it)."""
        for client in self._owned:
            await client.aclose()
