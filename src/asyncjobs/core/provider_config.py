"""The providers configuration: which providers exist, where they are, how hard to use
them, and which Secrets hold their keys.

Both processes read the same YAML file (the chart mounts it from a ConfigMap): the API
to accept exactly the configured provider names in `provider/model`, the operator to
call them. Keys are never in this file, only references to Secrets.

```yaml
providers:
  local: {type: local, latencyMs: 0}
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
limits:
  maxInFlight: 256
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

ProviderType = Literal["local", "openai"]


class SecretKeyRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    key: str = "api-key"


class KeyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    secret_ref: SecretKeyRef = Field(alias="secretRef")
    weight: float = Field(default=1.0, gt=0)
    models: tuple[str, ...] = ()


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
    raw = yaml.safe_load(Path(path).read_text()) or {}
    return ProvidersFile.model_validate(raw)
