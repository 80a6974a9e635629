"""The providers configuration: which providers exist, where they are, how hard to use
them, and which Secrets hold their keys.

Both processes read the same YAML file (the chart mounts it from a ConfigMap): the API
to accept exactly the configured provider names in `provider/model`, the operator to
call them. Keys are never in this file, only references to Secrets.

```yaml
providers:
  local: {type: local, latencyMs: 0, localLimits: {maxEmbeddingValues: 131072}}
  openai:
    type: openai
    baseURL: https://api.openai.com/v1
    timeoutSeconds: 120
    maxConcurrency: 64
    requestsPerMinute: 3000
    keys:
      - secretRef: {name: openai-key, key: api-key}
        weight: 1
        models: []
  azure:
    type: azure
    baseURL: https://my-resource.openai.azure.com
    apiVersion: "2024-10-21"
    deployments: {gpt-4o: prod-gpt4o}
    keys: [{secretRef: {name: azure-key}}]
  anthropic:
    type: anthropic
    version: "2023-06-01"
    keys: [{secretRef: {name: anthropic-key}}]
limits:
  maxInFlight: 256
```

docs/providers.md describes every type. The extensions are all optional, so a file
written for an older version still loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from asyncjobs.core.request_types import RequestType

# The OpenAI-compatible family (providers/openai_family.py holds their defaults).
OpenAIFamilyType = Literal[
    "openai",
    "groq",
    "together",
    "fireworks",
    "openrouter",
    "deepseek",
    "xai",
    "vllm",
    "ollama",
    "lmstudio",
]
ProviderType = Literal[
    "local",
    OpenAIFamilyType,
    "azure",
    "anthropic",
    "gemini",
    "mistral",
    "cohere",
]


class SecretKeyRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    key: str = "api-key"


class KeyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    secret_ref: SecretKeyRef = Field(alias="secretRef")
    weight: float = Field(default=1.0, gt=0)
    models: tuple[str, ...] = ()


class LocalLimits(BaseModel):
    """Bounds on what the offline `local` provider builds for one request.

    A few bytes of request can ask for megabytes of answer (400 inputs x 4,096
    dimensions is 35 MiB of JSON), which the operator holds in memory and stores in
    Secrets; a request over a bound fails as a 400 naming the option. The defaults keep
    an answer near or under 3 MiB, well inside the operator's memory and a few Secret chunks.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # OpenAI's own cap on inputs per embeddings request.
    max_embedding_inputs: int = Field(default=2048, ge=1, alias="maxEmbeddingInputs")
    # Inputs x dimensions: about 22 bytes each as JSON floats, so 131,072 is ~2.8 MiB.
    max_embedding_values: int = Field(default=131_072, ge=1, alias="maxEmbeddingValues")
    # Completion choices in one answer: prompts x n.
    max_choices: int = Field(default=128, ge=1, alias="maxChoices")
    # The answer's text and vectors together (an estimate made while building it).
    max_output_bytes: int = Field(default=4 << 20, ge=1024, alias="maxOutputBytes")


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: ProviderType
    base_url: str | None = Field(default=None, alias="baseURL")
    timeout_seconds: float = Field(default=120.0, gt=0, alias="timeoutSeconds")
    max_concurrency: int = Field(default=64, ge=1, alias="maxConcurrency")
    requests_per_minute: int | None = Field(default=None, ge=1, alias="requestsPerMinute")
    keys: tuple[KeyConfig, ...] = ()
    # Simulated time per call; the local provider honours it so benchmarks can model a
    # slow provider without a network. Remote providers ignore it.
    latency_ms: float = Field(default=0.0, ge=0, alias="latencyMs")
    # local: bounds on each answer (LocalLimits' defaults when absent).
    local_limits: LocalLimits | None = Field(default=None, alias="localLimits")
    # Narrows or widens the request types the provider is sent (default: the type's own).
    request_types: tuple[RequestType, ...] | None = Field(default=None, alias="requestTypes")
    # Extra non-secret headers on every request (OpenRouter's HTTP-Referer, anthropic-beta).
    headers: dict[str, str] = Field(default_factory=dict)
    # azure: the api-version query parameter, and model name -> deployment name.
    api_version: str | None = Field(default=None, alias="apiVersion")
    deployments: dict[str, str] = Field(default_factory=dict)
    # anthropic: the anthropic-version header.
    version: str | None = None

    @model_validator(mode="after")
    def _fields_fit_the_type(self) -> Self:
        if self.type == "azure" and not self.base_url:
            raise ValueError("azure needs baseURL, the resource endpoint")
        if self.type != "azure" and (self.api_version is not None or self.deployments):
            raise ValueError("apiVersion and deployments apply to type azure only")
        if self.type != "anthropic" and self.version is not None:
            raise ValueError("version applies to type anthropic only")
        if self.type != "local" and self.local_limits is not None:
            raise ValueError("localLimits applies to type local only")
        if self.type == "local" and (self.keys or self.headers):
            raise ValueError("the local provider takes no keys or headers")
        return self


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    max_in_flight: int = Field(default=256, ge=1, alias="maxInFlight")


class ProvidersFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: dict[str, ProviderConfig]
    limits: Limits = Limits()

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.providers)


DEFAULT = ProvidersFile(providers={"local": ProviderConfig(type="local")})


def load(path: str | Path | None) -> ProvidersFile:
    """The file's configuration, or the offline default when no file is given."""
    if path is None:
        return DEFAULT
    return parse(Path(path).read_bytes())


def parse(text: str | bytes) -> ProvidersFile:
    """The configuration in a file's content (the reloader hashes and parses the same bytes)."""
    return ProvidersFile.model_validate(yaml.safe_load(text) or {})
