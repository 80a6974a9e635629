"""Providers built from the configuration file, and the limits the operator enforces.

The operator calls `build_providers` once at start with a function that reads one key
of one Kubernetes Secret; keys go straight from that function into the providers and
are never logged or put into messages. The per-provider limits (concurrency, requests per
minute) are exposed as data: the operator owns the limiters, because only it sees every
call in flight. The timeout is the provider's own (its transport enforces it).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from asyncjobs.core.provider_config import KeyConfig, ProviderConfig, ProvidersFile
from asyncjobs.core.providers import anthropic, azure, cohere, gemini, mistral, model_names
from asyncjobs.core.providers.base import Provider
from asyncjobs.core.providers.keys import ApiKey
from asyncjobs.core.providers.local import LocalProvider
from asyncjobs.core.providers.openai_compat import OpenAICompatProvider
from asyncjobs.core.providers.openai_family import FAMILY
from asyncjobs.core.providers.transport import HttpProvider, InvalidModelName, WireFormat
from asyncjobs.core.request_types import RequestType

# read_secret(secret_name, key_in_secret) -> the key's value.
SecretReader = Callable[[str, str], Awaitable[str]]


class ProviderConfigError(Exception):
    """A provider cannot be built: a key Secret is missing, unreadable or empty."""


@dataclass(frozen=True)
class ProviderLimits:
    max_concurrency: int
    requests_per_minute: int | None  # None: no rate limit


def provider_limits(config: ProvidersFile) -> dict[str, ProviderLimits]:
    """The per-provider limits of a configuration, by provider name."""
    return {
        name: ProviderLimits(
            max_concurrency=provider.max_concurrency,
            requests_per_minute=provider.requests_per_minute,
        )
        for name, provider in config.providers.items()
    }


class ProviderSet(Mapping[str, Provider]):
    """The built providers by name, their limits, and the global in-flight limit."""

    def __init__(self, providers: dict[str, Provider], config: ProvidersFile) -> None:
        self._providers = providers
        self.limits = provider_limits(config)
        self.max_in_flight = config.limits.max_in_flight

    def __getitem__(self, name: str) -> Provider:
        return self._providers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._providers)

    def __len__(self) -> int:
        return len(self._providers)

    async def close(self) -> None:
        await asyncio.gather(*(provider.close() for provider in self._providers.values()))


async def build_providers(
    config: ProvidersFile,
    read_secret: SecretReader,
    *,
    rng: random.Random | None = None,
) -> ProviderSet:
    """Builds every configured provider, reading its keys through `read_secret`."""
    providers: dict[str, Provider] = {}
    for name, provider_config in config.providers.items():
        providers[name] = await _build(name, provider_config, read_secret, rng)
    return ProviderSet(providers, config)


async def _build(
    name: str, config: ProviderConfig, read_secret: SecretReader, rng: random.Random | None
) -> Provider:
    if config.type == "local":
        return LocalProvider(name, latency_ms=config.latency_ms, limits=config.local_limits)
    keys = [await _read_key(name, key, read_secret) for key in config.keys]
    family = FAMILY.get(config.type)
    if family is not None:
        return OpenAICompatProvider(
            name,
            base_url=config.base_url or family.base_url,
            keys=keys,
            timeout_seconds=config.timeout_seconds,
            max_connections=config.max_concurrency,
            supported=_supported(config, family.supported),
            headers=config.headers,
            rng=rng,
        )
    return HttpProvider(
        name,
        wire_format(config, name),
        keys=keys,
        timeout_seconds=config.timeout_seconds,
        max_connections=config.max_concurrency,
        headers=config.headers,
        rng=rng,
    )


def _supported(config: ProviderConfig, default: frozenset[RequestType]) -> frozenset[RequestType]:
    return default if config.request_types is None else frozenset(config.request_types)


# The provider types with a wire format of their own (the OpenAI family shares one,
# openai_family.FAMILY). Each wire class holds its type's defaults (base URL, API version,
# supported request types), so a new type is one row here.
WIRE_FORMATS: dict[str, Callable[..., WireFormat]] = {
    "azure": azure.AzureWire,
    "anthropic": anthropic.AnthropicWire,
    "gemini": gemini.GeminiWire,
    "mistral": mistral.MistralWire,
    "cohere": cohere.CohereWire,
}


def wire_format(config: ProviderConfig, name: str = "") -> WireFormat:
    """The pure wire format of a provider type that has its own (not the OpenAI family):
    its wire class, with what the configuration sets in place of the class's defaults."""
    wire = WIRE_FORMATS.get(config.type)
    if wire is None:
        raise ProviderConfigError(f"provider type {config.type!r} has no wire format")
    for model, deployment in config.deployments.items():
        # Checked again on every call; refusing the file says at once which entry is wrong.
        try:
            model_names.azure_deployment(deployment)
        except InvalidModelName as error:
            raise ProviderConfigError(
                f"provider {name}: deployments.{model}: invalid deployment name "
                f"{error.shown}; {error.rule}"
            ) from error
    return wire(**_wire_settings(config))


def _wire_settings(config: ProviderConfig) -> dict[str, Any]:
    # The config validator admits apiVersion and deployments on azure only and version on
    # anthropic only, and insists on azure's base URL; an empty string keeps the default.
    settings: dict[str, Any] = {
        "base_url": config.base_url,
        "api_version": config.api_version,
        "version": config.version,
        "deployments": dict(config.deployments),
    }
    chosen = {name: value for name, value in settings.items() if value}
    if config.request_types is not None:  # an empty list means none
        chosen["supported"] = frozenset(config.request_types)
    return chosen


async def _read_key(name: str, key: KeyConfig, read_secret: SecretReader) -> ApiKey:
    ref = key.secret_ref
    where = f"provider {name}: key {ref.key!r} of Secret {ref.name!r}"
    try:
        value = (await read_secret(ref.name, ref.key)).strip()
    except Exception as error:
        # The cause is kept for operators, but the message never contains secret data.
        raise ProviderConfigError(f"{where} cannot be read ({type(error).__name__})") from error
    if not value:
        raise ProviderConfigError(f"{where} is empty")
    return ApiKey(value=value, weight=key.weight, models=key.models)
