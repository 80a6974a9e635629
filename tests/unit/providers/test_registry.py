"""Providers are built from configuration, keys come only through the secret reader."""

from __future__ import annotations

import random

import pytest

from asyncjobs.core.provider_config import DEFAULT, ProvidersFile, parse
from asyncjobs.core.providers.base import ProviderError, ProviderRequest
from asyncjobs.core.providers.keys import ApiKey, key_order
from asyncjobs.core.providers.local import LocalProvider
from asyncjobs.core.providers.openai_compat import OpenAICompatProvider
from asyncjobs.core.providers.registry import (
    ProviderConfigError,
    ProviderLimits,
    build_providers,
    provider_limits,
)
from asyncjobs.core.request_types import RequestType

CONFIG = ProvidersFile.model_validate(
    {
        "providers": {
            "local": {"type": "local", "latencyMs": 5},
            "openai": {
                "type": "openai",
                "baseURL": "http://127.0.0.1:9/v1",
                "timeoutSeconds": 30,
                "maxConcurrency": 8,
                "requestsPerMinute": 600,
                "keys": [
                    {"secretRef": {"name": "openai-a"}, "weight": 3},
                    {"secretRef": {"name": "openai-b", "key": "token"}, "models": ["gpt-4o*"]},
                ],
            },
        },
        "limits": {"maxInFlight": 100},
    }
)

SECRETS = {("openai-a", "api-key"): "sk-aaa", ("openai-b", "token"): "sk-bbb\n"}


class SecretStore:
    def __init__(self, values: dict[tuple[str, str], str]) -> None:
        self.values = values
        self.reads: list[tuple[str, str]] = []

    async def __call__(self, name: str, key: str) -> str:
        self.reads.append((name, key))
        return self.values[(name, key)]


async def test_builds_each_configured_provider_reading_its_keys() -> None:
    secrets = SecretStore(SECRETS)
    built = await build_providers(CONFIG, secrets)
    try:
        assert set(built) == {"local", "openai"}
        assert isinstance(built["local"], LocalProvider)
        assert isinstance(built["openai"], OpenAICompatProvider)
        assert built["openai"].name == "openai"
        assert secrets.reads == [("openai-a", "api-key"), ("openai-b", "token")]
        assert built.max_in_flight == 100
    finally:
        await built.close()


def test_limits_are_exposed_per_provider() -> None:
    assert provider_limits(CONFIG) == {
        "local": ProviderLimits(max_concurrency=64, requests_per_minute=None),
        "openai": ProviderLimits(max_concurrency=8, requests_per_minute=600),
    }


async def test_default_configuration_needs_no_secrets() -> None:
    secrets = SecretStore({})
    built = await build_providers(DEFAULT, secrets)
    assert list(built) == ["local"]
    assert secrets.reads == []


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({("openai-b", "token"): "sk-bbb"}, "cannot be read (KeyError)"),
        ({**SECRETS, ("openai-a", "api-key"): "  "}, "is empty"),
    ],
)
async def test_missing_or_empty_key_fails_without_revealing_secrets(
    values: dict[tuple[str, str], str], reason: str
) -> None:
    with pytest.raises(ProviderConfigError) as caught:
        await build_providers(CONFIG, SecretStore(values))
    message = str(caught.value)
    assert "openai-a" in message
    assert reason in message
    assert "sk-" not in message


def test_api_key_repr_hides_the_secret() -> None:
    assert "sk-secret" not in repr(ApiKey("sk-secret", weight=2, models=("m",)))


def test_key_order_keeps_only_keys_serving_the_model() -> None:
    general = ApiKey("a")
    only_4o = ApiKey("b", models=("gpt-4o*",))
    exact = ApiKey("c", models=("o3",))
    keys = [general, only_4o, exact]
    rng = random.Random(1)
    assert set(map(id, key_order(keys, "gpt-4o-mini", rng))) == {id(general), id(only_4o)}
    assert key_order(keys, "o3", rng)[0] in (general, exact)
    assert key_order([only_4o], "gpt-3.5", rng) == []


def test_key_order_puts_heavier_keys_first_in_proportion() -> None:
    heavy, light = ApiKey("heavy", weight=3), ApiKey("light", weight=1)
    rng = random.Random(7)
    firsts = [key_order([heavy, light], "m", rng)[0] for _ in range(4000)]
    share = sum(key is heavy for key in firsts) / len(firsts)
    assert 0.72 < share < 0.78  # expected 3 / (3 + 1)
    assert all(len(key_order([heavy, light], "m", rng)) == 2 for _ in range(10))


async def test_an_azure_deployment_that_would_leave_its_url_path_is_refused_at_load() -> None:
    config = ProvidersFile.model_validate(
        {
            "providers": {
                "azure": {
                    "type": "azure",
                    "baseURL": "https://my-resource.openai.azure.com",
                    "deployments": {"gpt-4o": "prod-gpt4o", "files": "../files"},
                }
            }
        }
    )
    with pytest.raises(ProviderConfigError) as caught:
        await build_providers(config, SecretStore({}))
    message = 'provider azure: deployments.files: invalid deployment name "../files"; '
    assert str(caught.value).startswith(message)


async def test_local_limits_from_the_providers_file_reach_the_provider() -> None:
    config = parse(b"providers:\n  local: {type: local, localLimits: {maxEmbeddingValues: 8}}\n")
    providers = await build_providers(config, SecretStore({}))
    request = ProviderRequest(
        request_type=RequestType.EMBEDDING,
        model="m",
        body=b'{"model": "local/m", "input": ["a", "b"], "dimensions": 8}',
        content_type="application/json",
    )
    with pytest.raises(ProviderError, match="maxEmbeddingValues"):
        await providers["local"].call(request)
