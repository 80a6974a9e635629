"""The OpenAI-compatible family by name, and the configuration's provider-specific fields."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from asyncjobs.core.provider_config import ProvidersFile
from asyncjobs.core.providers.azure import AzureWire
from asyncjobs.core.providers.base import ProviderError
from asyncjobs.core.providers.openai_compat import OpenAICompatProvider
from asyncjobs.core.providers.openai_family import FAMILY
from asyncjobs.core.providers.openai_wire import OpenAIWire
from asyncjobs.core.providers.registry import build_providers
from asyncjobs.core.providers.transport import HttpProvider
from asyncjobs.core.request_types import RequestType
from tests.fakes.openai_server import FakeOpenAIServer

from .conftest import GOOD_KEY
from .samples import sample_request

DEFAULT_URLS = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together": "https://api.together.xyz/v1",
    "fireworks": "https://api.fireworks.ai/inference/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "xai": "https://api.x.ai/v1",
    "vllm": "http://localhost:8000/v1",
    "ollama": "http://localhost:11434/v1",
    "lmstudio": "http://localhost:1234/v1",
}


async def no_secrets(name: str, key: str) -> str:
    raise AssertionError(f"no secret should be read, got {name}/{key}")


async def secret_value(name: str, key: str) -> str:
    return GOOD_KEY


def config(**providers: dict[str, Any]) -> ProvidersFile:
    return ProvidersFile.model_validate({"providers": providers})


@pytest.mark.parametrize(("kind", "url"), sorted(DEFAULT_URLS.items()))
async def test_each_family_member_gets_its_default_base_url(kind: str, url: str) -> None:
    built = await build_providers(config(**{kind: {"type": kind}}), no_secrets)
    try:
        provider = built[kind]
        assert isinstance(provider, OpenAICompatProvider)
        assert isinstance(provider.wire, OpenAIWire)
        assert provider.wire.base_url == url
        assert provider.wire.supported == FAMILY[kind].supported
    finally:
        await built.close()


def test_family_table_names_exactly_the_config_types() -> None:
    assert set(FAMILY) == set(DEFAULT_URLS)
    assert all(RequestType.CHAT_COMPLETION in family.supported for family in FAMILY.values())


async def test_family_member_at_its_own_base_url_talks_openai(fake: FakeOpenAIServer) -> None:
    cfg = config(
        groq={
            "type": "groq",
            "baseURL": fake.base_url,
            "keys": [{"secretRef": {"name": "groq"}}],
            "headers": {"X-Title": "asyncjobs"},
        }
    )
    built = await build_providers(cfg, secret_value)
    try:
        result = await built["groq"].call(sample_request(RequestType.CHAT_COMPLETION))
    finally:
        await built.close()
    assert result.body["choices"][0]["message"]["content"] == "fake chat answer"
    (received,) = fake.stats()["requests"]
    assert (received["path"], received["key"]) == ("/v1/chat/completions", GOOD_KEY)


async def test_family_member_rejects_a_type_it_has_no_endpoint_for(fake: FakeOpenAIServer) -> None:
    cfg = config(deepseek={"type": "deepseek", "baseURL": fake.base_url})
    built = await build_providers(cfg, no_secrets)
    try:
        with pytest.raises(ProviderError) as caught:
            await built["deepseek"].call(sample_request(RequestType.EMBEDDING))
    finally:
        await built.close()
    assert caught.value.message == "unsupported request type embedding for provider deepseek"
    assert (caught.value.status_code, caught.value.retryable) == (400, False)
    assert fake.stats()["count"] == 0


async def test_request_types_in_config_override_the_family_default() -> None:
    cfg = config(ollama={"type": "ollama", "requestTypes": ["chat_completion", "rerank"]})
    built = await build_providers(cfg, no_secrets)
    try:
        provider = built["ollama"]
        assert isinstance(provider, OpenAICompatProvider)
        assert isinstance(provider.wire, OpenAIWire)
        assert provider.wire.supported == {RequestType.CHAT_COMPLETION, RequestType.RERANK}
    finally:
        await built.close()


async def test_azure_config_builds_deployment_mapping_and_api_version() -> None:
    cfg = config(
        azure={
            "type": "azure",
            "baseURL": "https://res.openai.azure.com",
            "apiVersion": "2025-01-01-preview",
            "deployments": {"gpt-4o": "prod-4o"},
            "keys": [{"secretRef": {"name": "azure"}}],
        }
    )
    built = await build_providers(cfg, secret_value)
    try:
        provider = built["azure"]
        assert isinstance(provider, HttpProvider)
        assert provider.wire == AzureWire(
            "https://res.openai.azure.com", "2025-01-01-preview", {"gpt-4o": "prod-4o"}
        )
    finally:
        await built.close()


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ({"type": "azure"}, "azure needs baseURL"),
        ({"type": "openai", "apiVersion": "x"}, "apply to type azure only"),
        ({"type": "openai", "deployments": {"a": "b"}}, "apply to type azure only"),
        ({"type": "gemini", "version": "1"}, "version applies to type anthropic only"),
        ({"type": "local", "keys": [{"secretRef": {"name": "k"}}]}, "takes no keys"),
        ({"type": "nonesuch"}, "Input should be"),
        ({"type": "openai", "requestTypes": ["chat"]}, "Input should be"),
    ],
)
def test_invalid_provider_fields_are_refused(raw: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        config(p=raw)


def test_a_file_of_the_first_version_still_loads() -> None:
    loaded = config(openai={"type": "openai", "baseURL": "http://x/v1", "keys": []})
    assert loaded.names == frozenset({"openai"})
    assert loaded.providers["openai"].request_types is None
