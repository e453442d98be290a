"""The fallback chain: when a model cannot answer, the next one does, before the first token.

A turn's chain is its persona's model (or `BOT_MODEL`), then the persona's own fallbacks
(`/persona fallback`) or `BOT_FALLBACK_MODELS`. The chain moves on only before the first
token (two models never write one answer), and only for what another model may not
suffer: the connection refused or reset, no headers or first token within the attempt's
share of the time, a 5xx, a 404 (a retired model), a 429 asking for a long wait, or a 400
saying the model lacks what the request needs (images: the next model that takes them).
A refused key or an empty account (401, 402) is the operator's to fix: said at once, the
chain untouched. Each model gets at most one retry; the whole chain stays within
`MODEL_FIRST_TOKEN_TIMEOUT` of the question. Models whose breaker is open
(`bot.model.model_breaker`) are skipped without a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

from bot.config import Settings
from bot.files.attachments import takes_images
from bot.model import llm
from bot.model.model_breaker import CLOSED, HALF_OPEN, ModelBreakers
from bot.model.providers import ModelRef, Providers, key_variable
from bot.ops import metrics, tracing

log = logging.getLogger(__name__)

LONG_RETRY_AFTER = 3.0  # a 429 asking for a longer wait than this moves on instead of waiting
MIN_ATTEMPT = 0.5  # seconds of the clock: a retry that would get less than this is not made
IMAGES, TOOLS = "images", "tools"
# Words a 400 uses when the model cannot take part of the request, by what it cannot take.
_LACKS = {
    IMAGES: ("image", "vision", "multimodal", "multi-modal"),
    TOOLS: ("tool", "function call", "function_call"),
}
_UNSUPPORTED = ("not support", "unsupported", "doesn't support", "not supported", "cannot accept",
                "not enabled", "not available", "does not accept", "no support", "only supported",
                "no endpoints found")
CHAIN_DOWN = "The model and its fallbacks cannot answer right now. Please try again in a moment."


@dataclass
class ChainAnswer:
    """What the engine learns of one turn's chain: who answered, and who was passed over."""

    first: str = ""
    model: str = ""  # the model that answered (or the last one tried)
    passed: list[tuple[str, str]] = field(default_factory=list)  # (model, reason), in order

    @property
    def fell_back(self) -> bool:
        return bool(self.model) and self.model != self.first


def needs(request: llm.ChatRequest) -> frozenset[str]:
    """What a model must take to answer `request`."""
    needed = {TOOLS} if request.tools else set()
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") == "image_url" for p in content
        ):
            needed.add(IMAGES)
            break
    return frozenset(needed)


def lacking(error: llm.LLMError, needed: frozenset[str]) -> str | None:
    """The capability a 400 says the model lacks, among those the request needs."""
    if not isinstance(error, llm.BadRequest):
        return None
    text = error.detail.lower()
    if not any(word in text for word in _UNSUPPORTED):
        return None
    for capability in sorted(needed):
        if any(word in text for word in _LACKS[capability]):
            return capability
    return None


def reason_to_move(error: llm.LLMError, needed: frozenset[str]) -> str | None:
    """Why the chain moves on after `error` (a metric label), or None when it must not."""
    if isinstance(error, llm.Timeout):
        return "timeout"
    if isinstance(error, llm.NotFound):
        return "not_found"
    if isinstance(error, llm.RateLimited):
        return "rate_limited"
    if isinstance(error, llm.Unavailable):
        return "unavailable" if error.status is None else "server_error"
    if lacking(error, needed) is not None:
        return "capability"
    return None  # auth, payment, context too long, a bad request, a stream cut after text


def _quick_retry(error: llm.LLMError) -> bool:
    """Worth one more try of the same model: a blip, not a model that is down or slow."""
    if isinstance(error, llm.RateLimited):
        return error.retry_after is None or error.retry_after <= LONG_RETRY_AFTER
    return isinstance(error, llm.Unavailable)


class ModelChain:
    def __init__(self, providers: Providers, breakers: ModelBreakers, settings: Settings) -> None:
        self.providers = providers
        self.breakers = breakers
        self.settings = settings
        # Capabilities a model's 400 said it lacks, remembered by this process for the next turns.
        self._lacks: dict[str, set[str]] = {}

    def models(self, primary: str, own: tuple[str, ...] | None) -> list[str]:
        """The chain of a turn: its model, then the persona's fallbacks (None: the default ones)."""
        fallbacks = self.settings.chain.fallback_models if own is None else own
        return list(dict.fromkeys([primary, *fallbacks]))

    def lacks(self, model: str, capability: str) -> bool:
        """Whether a 400 from `model` said it cannot take `capability` (remembered by this process)."""
        return capability in self._lacks.get(model, set())

    def _takes(self, model: str, needed: frozenset[str], first: bool) -> bool:
        if needed & self._lacks.get(model, set()):
            return False
        # The first model was chosen for the request (the engine asked the persona about images).
        return first or IMAGES not in needed or takes_images(model, self.settings.attachments)

    async def stream(
        self, request: llm.ChatRequest, models: Sequence[str], deadline: float, answer: ChainAnswer
    ) -> AsyncIterator[llm.Delta]:
        """The deltas of the first model of `models` that answers; `answer` says which."""
        needed = needs(request)
        answer.first = models[0]
        # A chain of one model has nowhere to go: it is always asked, at no round trip.
        states = await self.breakers.states(models) if len(models) > 1 else {}
        usable = [m for i, m in enumerate(models) if self._takes(m, needed, i == 0)]
        for model in models:
            if model not in usable:
                answer.passed.append((model, "capability"))
        last_error: llm.LLMError | None = None
        moving: tuple[str, str] | None = None  # (from, reason), counted when the next model is tried
        for index, model in enumerate(usable):
            state = states.get(model, CLOSED)
            if state != CLOSED and not (state == HALF_OPEN and await self.breakers.probe(model)):
                self._move(moving, model)
                moving = (model, "breaker_open")
                answer.passed.append(moving)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._move(moving, model)
            moving = None
            answer.model = model
            later = sum(1 for m in usable[index + 1:] if states.get(m, CLOSED) in (CLOSED, HALF_OPEN))
            # Each model still to try gets a fair share of the time left, the last one all of it.
            attempt_deadline = time.monotonic() + left / (1 + later)
            ref = self.providers.ref(model)
            started = False
            try:
                async for delta in self._attempts(ref, request, attempt_deadline, last=later == 0):
                    if not started:
                        started = True
                        if state == HALF_OPEN:
                            await self.breakers.succeeded(model)
                    yield delta
                return
            except llm.LLMError as error:
                if started:
                    raise  # text is on screen: never finished by another model
                reason = reason_to_move(error, needed)
                if reason is None:
                    raise self._for_operator(error, ref) from None
                log.warning("model %s could not answer (%s): %s", model, reason, error)
                if reason == "capability":
                    self._lacks.setdefault(model, set()).update(needed)
                else:
                    await self.breakers.failed(model)
                last_error = error
                moving = (model, reason)
                answer.passed.append(moving)
        self._move(moving, "none")
        if last_error is None:
            raise llm.Unavailable(CHAIN_DOWN, detail="every model of the chain is skipped (breakers open)")
        if len(models) > 1:
            raise replace(last_error, user_message=CHAIN_DOWN)
        raise last_error

    @staticmethod
    def _move(moving: tuple[str, str] | None, to: str) -> None:
        if moving is not None:
            metrics.model_fallback(moving[0], to, moving[1])

    async def _attempts(
        self, ref: ModelRef, request: llm.ChatRequest, deadline: float, last: bool
    ) -> AsyncIterator[llm.Delta]:
        """One model: a request, and at most one retry after a blip (a 5xx, a reset, a short 429);
        the last model of the chain also after a silence, as long as the time left allows."""
        client = self.providers.client(ref)
        asked = replace(request, model=ref.name)
        retries = min(1, client.settings.max_retries)
        for attempt in range(retries + 1):
            call = tracing.ModelCall(ref.provider, ref.name, client.settings.base_url, asked, ref.spec)
            started = False
            try:
                async for delta in client.stream(asked, deadline=deadline, retries=0):
                    started = started or bool(delta.content or delta.reasoning or delta.tool_calls)
                    call.delta(delta)
                    yield delta
            except llm.LLMError as error:
                call.end(error, reason_to_move(error, needs(request)))
                again = _quick_retry(error) or (last and isinstance(error, llm.Timeout))
                if started or attempt == retries or not again:
                    raise
                backoff = client._backoff(0, error)  # the client's own: Retry-After, else jittered
                shortest = client.clock.real(backoff + min(MIN_ATTEMPT, client.settings.first_token_timeout))
                if time.monotonic() + shortest >= deadline:
                    raise
                await client.clock.sleep(backoff)
                continue
            except BaseException as exc:
                call.end(exc)
                raise
            call.end()
            return

    def _for_operator(self, error: llm.LLMError, ref: ModelRef) -> llm.LLMError:
        """401 and 402 name the provider's own key setting; other errors stay as they are."""
        if isinstance(error, llm.AuthError):
            return replace(error, user_message=(
                f"The model API key for `{ref.provider}` was refused (401). "
                f"An operator needs to check {key_variable(ref.provider)}."
            ))
        if isinstance(error, llm.PaymentRequired):
            return replace(error, user_message=(
                f"The `{ref.provider}` model account is out of credits (402). An operator needs to top it up."
            ))
        return error
