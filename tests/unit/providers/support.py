"""Helpers shared by the per-provider tests: a key order that keeps the configured order,
a fixed clock, and a path reader for result bodies."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

from asyncjobs.core.providers.base import ProviderRequest
from asyncjobs.core.request_types import RequestType

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class FirstKeyFirst(random.Random):
    """Makes key_order keep the configured order (earlier keys draw higher)."""

    def __init__(self) -> None:
        super().__init__()
        self._next = 1.0

    def random(self) -> float:
        self._next /= 2
        return self._next


def dig(value: Any, *where: str | int) -> Any:
    for step in where:
        value = value[step]
    return value


def request(request_type: RequestType, model: str, provider: str, **body: Any) -> ProviderRequest:
    """A stored request as the API hands it over: `model` carries the provider prefix."""
    full = {"model": f"{provider}/{model}", **body}
    return ProviderRequest(request_type, model, json.dumps(full).encode(), "application/json")
