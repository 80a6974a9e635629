"""Live calls to the real providers, only where their API keys are in the environment.

They cannot run in CI (no network, no keys) and are skipped there; a developer with a key
runs e.g. `ANTHROPIC_API_KEY=... uv run pytest -m live` (marked by folder, tests/conftest.py).
Each sends one tiny chat (or embedding) request through the registry, as the operator
would, and checks the unified shape of the answer.
"""

from __future__ import annotations

import json
import os

import pytest

from asyncjobs.core.provider_config import ProvidersFile
from asyncjobs.core.providers.base import ProviderRequest
from asyncjobs.core.providers.registry import build_providers
from asyncjobs.core.request_types import RequestType

# config type, environment variable, model, request type
LIVE = [
    ("openai", "OPENAI_API_KEY", "gpt-4o-mini", RequestType.CHAT_COMPLETION),
    ("groq", "GROQ_API_KEY", "llama-3.1-8b-instant", RequestType.CHAT_COMPLETION),
    ("together", "TOGETHER_API_KEY", "meta-llama/Llama-3.2-3B-Instruct-Turbo",
     RequestType.CHAT_COMPLETION),
    ("fireworks", "FIREWORKS_API_KEY", "accounts/fireworks/models/llama-v3p1-8b-instruct",
     RequestType.CHAT_COMPLETION),
    ("openrouter", "OPENROUTER_API_KEY", "openai/gpt-4o-mini", RequestType.CHAT_COMPLETION),
    ("deepseek", "DEEPSEEK_API_KEY", "deepseek-chat", RequestType.CHAT_COMPLETION),
    ("xai", "XAI_API_KEY", "grok-3-mini", RequestType.CHAT_COMPLETION),
    ("anthropic", "ANTHROPIC_API_KEY", "claude-3-5-haiku-latest", RequestType.CHAT_COMPLETION),
    ("gemini", "GEMINI_API_KEY", "gemini-2.0-flash", RequestType.CHAT_COMPLETION),
    ("gemini", "GEMINI_API_KEY", "text-embedding-004", RequestType.EMBEDDING),
    ("mistral", "MISTRAL_API_KEY", "mistral-small-latest", RequestType.CHAT_COMPLETION),
    ("cohere", "COHERE_API_KEY", "command-r-08-2024", RequestType.CHAT_COMPLETION),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "variable", "model", "request_type"),
    LIVE,
    ids=[f"{row[0]}-{row[3].value}" for row in LIVE],
)
async def test_live_provider_answers_in_the_unified_shape(
    kind: str, variable: str, model: str, request_type: RequestType
) -> None:
    key = os.environ.get(variable)
    if not key:
        pytest.skip(f"{variable} is not set")
    config = ProvidersFile.model_validate(
        {"providers": {kind: {"type": kind, "keys": [{"secretRef": {"name": "env"}}]}}}
    )

    async def from_environment(name: str, secret_key: str) -> str:
        return key

    body: dict[str, object] = {"model": f"{kind}/{model}"}
    if request_type is RequestType.EMBEDDING:
        body["input"] = ["hello"]
    else:
        body |= {"messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 5}
    built = await build_providers(config, from_environment)
    try:
        result = await built[kind].call(
            ProviderRequest(request_type, model, json.dumps(body).encode(), "application/json")
        )
    finally:
        await built.close()
    if request_type is RequestType.EMBEDDING:
        assert result.body["data"][0]["embedding"]
    else:
        assert result.body["choices"][0]["message"]["role"] == "assistant"
        assert result.body["usage"]["total_tokens"] > 0
