"""The OpenAI-compatible provider: every request type over one pooled HTTP session.

OpenAI itself and the many servers that copy its API (vLLM, Ollama, Groq, ...) differ
only in base URL, keys and which endpoints they serve, so one class serves them all
(openai_family names them and gives their defaults). The decisions live in pure modules
(openai_wire for bodies, openai_errors for failures, keys for key order); the I/O is
transport.HttpProvider's.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence, Set
from datetime import datetime

from asyncjobs.core.providers.keys import ApiKey
from asyncjobs.core.providers.openai_wire import OpenAIWire
from asyncjobs.core.providers.transport import ROTATE_KEY_STATUSES, HttpProvider, utc_now
from asyncjobs.core.request_types import RequestType

__all__ = ["DEFAULT_BASE_URL", "ROTATE_KEY_STATUSES", "OpenAICompatProvider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAICompatProvider(HttpProvider):
    """Calls an OpenAI-compatible server; raises ProviderError on any failure."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        keys: Sequence[ApiKey] = (),
        timeout_seconds: float = 120.0,
        max_connections: int = 64,
        supported: Set[RequestType] = frozenset(RequestType),
        headers: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(
            name,
            OpenAIWire(base_url or DEFAULT_BASE_URL, supported),
            keys=keys,
            key_required=False,
            timeout_seconds=timeout_seconds,
            max_connections=max_connections,
            headers=headers,
            rng=rng,
            clock=clock,
        )
