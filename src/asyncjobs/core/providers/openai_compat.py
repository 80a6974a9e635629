"""The OpenAI-compatible provider: every request type over one pooled HTTP session.

OpenAI itself and the many servers that copy its API (vLLM, Ollama, Groq, ...) differ
only in base URL and keys, so one class serves them all. The decisions live in pure
modules (openai_wire for bodies, openai_errors for failures, keys for key order); this
module only does the I/O: one aiohttp session per provider, opened lazily inside the
running event loop, with a connection pool sized to the provider's concurrency limit.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import aiohttp

from asyncjobs.core.providers import openai_errors, openai_wire
from asyncjobs.core.providers.base import ProviderError, ProviderRequest, ProviderResult
from asyncjobs.core.providers.keys import ApiKey, key_order

DEFAULT_BASE_URL = "https://api.openai.com/v1"

# Statuses after which another key may succeed where this one failed.
ROTATE_KEY_STATUSES = frozenset({401, 429})


def _utc_now() -> datetime:
    return datetime.now(UTC)


class OpenAICompatProvider:
    """Calls an OpenAI-compatible server; raises ProviderError on any failure."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        keys: Sequence[ApiKey] = (),
        timeout_seconds: float = 120.0,
        max_connections: int = 64,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.name = name
        self._base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._keys = tuple(keys)
        self._timeout_seconds = timeout_seconds
        self._max_connections = max_connections
        self._rng = rng or random.Random()
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=self._timeout_seconds),
                raise_for_status=False,
            )
        return self._session

    async def call(self, request: ProviderRequest) -> ProviderResult:
        try:
            wire = openai_wire.prepare(request)
        except openai_wire.BadRequestBody as error:
            raise ProviderError(
                str(error), status_code=400, retryable=False, error_type="invalid_request_error"
            ) from error
        if not self._keys:
            # Self-hosted servers (vLLM, Ollama) often take no key at all.
            return await self._send(request, wire, None)
        keys = key_order(self._keys, request.model, self._rng)
        if not keys:
            raise ProviderError(
                f"no API key of provider {self.name} is configured for model {request.model}",
                status_code=None,
                retryable=False,
                error_type="configuration_error",
            )
        for key in keys[:-1]:
            try:
                return await self._send(request, wire, key)
            except ProviderError as error:
                if error.status_code not in ROTATE_KEY_STATUSES:
                    raise
        # The last key's failure is the call's failure, Retry-After included.
        return await self._send(request, wire, keys[-1])

    async def _send(
        self, request: ProviderRequest, wire: openai_wire.WireRequest, key: ApiKey | None
    ) -> ProviderResult:
        headers = {"Content-Type": wire.content_type}
        if key is not None:
            headers["Authorization"] = f"Bearer {key.value}"
        session = self._open_session()
        try:
            async with session.post(
                self._base_url + wire.path, data=wire.body, headers=headers
            ) as response:
                payload = await response.read()
                status = response.status
                content_type = response.headers.get("Content-Type", "")
                response_headers = {k.lower(): v for k, v in response.headers.items()}
        except TimeoutError as error:
            raise openai_errors.timeout_error(self._timeout_seconds) from error
        except aiohttp.ClientError as error:
            raise openai_errors.connection_error(str(error) or type(error).__name__) from error
        if not 200 <= status < 300:
            raise openai_errors.error_from_response(
                status, response_headers, payload, self._clock()
            )
        try:
            return ProviderResult(
                body=openai_wire.success_body(request.request_type, content_type, payload)
            )
        except ValueError as error:
            raise ProviderError(
                f"provider answered HTTP {status} with a body that is not a JSON object",
                status_code=None,
                retryable=True,
                error_type="invalid_response",
            ) from error

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
        # Give the connector's transports a moment to close, as aiohttp recommends, so no
        # "unclosed transport" warning fires when the loop ends.
        await asyncio.sleep(0)
