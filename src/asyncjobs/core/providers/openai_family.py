"""The OpenAI-compatible family: named providers that differ only in defaults.

Groq, Together, Fireworks and the others copy OpenAI's paths and bodies, so they need no
code of their own, only a table: where they live, which of our request types they have
an endpoint for (so an unsupported type fails as a clear 400 before any network call,
not as a puzzling 404 from the provider). A config's `baseURL` and `requestTypes`
override the defaults (a newer server, a proxy). With no key configured, requests go
without one: self-hosted servers (vLLM, Ollama) often take none, and a hosted service
answers its own 401, which says more than we could.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncjobs.core.request_types import RequestType as T


@dataclass(frozen=True)
class Family:
    base_url: str
    supported: frozenset[T]


_CHAT = frozenset({T.CHAT_COMPLETION, T.TEXT_COMPLETION})

FAMILY: dict[str, Family] = {
    # OpenAI has every request type but rerank and OCR.
    "openai": Family("https://api.openai.com/v1", frozenset(T) - {T.RERANK, T.OCR}),
    "groq": Family(
        "https://api.groq.com/openai/v1",
        frozenset({T.CHAT_COMPLETION, T.RESPONSES, T.TRANSCRIPTION, T.SPEECH}),
    ),
    "together": Family(
        "https://api.together.xyz/v1",
        _CHAT | {T.EMBEDDING, T.IMAGE_GENERATION, T.RERANK, T.SPEECH, T.TRANSCRIPTION},
    ),
    "fireworks": Family(
        "https://api.fireworks.ai/inference/v1", _CHAT | {T.EMBEDDING, T.RESPONSES}
    ),
    "openrouter": Family("https://openrouter.ai/api/v1", _CHAT | {T.RESPONSES, T.EMBEDDING}),
    "deepseek": Family("https://api.deepseek.com/v1", _CHAT),
    "xai": Family("https://api.x.ai/v1", _CHAT | {T.RESPONSES, T.IMAGE_GENERATION}),
    "vllm": Family(
        "http://localhost:8000/v1", _CHAT | {T.RESPONSES, T.EMBEDDING, T.TRANSCRIPTION, T.RERANK}
    ),
    "ollama": Family("http://localhost:11434/v1", _CHAT | {T.EMBEDDING}),
    "lmstudio": Family("http://localhost:1234/v1", _CHAT | {T.EMBEDDING, T.RESPONSES}),
}
