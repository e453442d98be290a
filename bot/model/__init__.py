"""Asking the model: the prompt within the token budget, the request within its size, the
providers, the fallback chain and its breakers, the streamed chat completions client."""
