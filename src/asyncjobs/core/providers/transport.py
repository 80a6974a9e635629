"""The thin I/O every HTTP provider shares: one pooled session, keys tried in turn.

A provider is a wire format (pure: how to build the request, read the answer, read an
error, which header carries the key) plus this class, which does the only impure work:
POST the bytes, time out, try the next key when one is rejected or throttled. Keeping
the I/O in one place means a new provider is a pure module and a table entry, and
timeouts, connection failures and key rotation behave the same for every provider.
Redirects are never followed (every key travels in a header that a followed redirect
would carry to the Location's host): a 3xx fails the call, naming only the host.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp

from asyncjobs.core import cpu_worker, large_bytes, results
from asyncjobs.core.cpu_worker import CpuWorker
from asyncjobs.core.providers import failures, openai_errors
from asyncjobs.core.providers.base import ProviderError, ProviderRequest, ProviderResult
from asyncjobs.core.providers.keys import ApiKey, key_order
from asyncjobs.core.request_types import RequestType
from asyncjobs.core.results import PreparedResult

log = logging.getLogger(__name__)

# Statuses after which another key may succeed where this one failed.
ROTATE_KEY_STATUSES = frozenset({401, 429})
# The largest provider answer read. The worker that decodes a large answer holds its
# parsed form, several times the bytes (a 40 MiB embeddings answer took the operator
# and its worker to 672 MiB, bench/README.md), inside the pod's 1 GiB; a provider
# answering more (a bug, a hostile server) fails the job instead of the process.
MAX_ANSWER_BYTES = 64 << 20


class BadRequestBody(ValueError):
    """The stored body cannot be turned into a provider request."""


class InvalidModelName(BadRequestBody):
    """A model or deployment name that cannot become part of the provider's URL."""

    def __init__(self, what: str, shown: str, rule: str) -> None:
        super().__init__(f"{shown}; {rule}")
        self.what = what  # "model" or "deployment"
        self.shown = shown  # the name, escaped and shortened: it came from a client
        self.rule = rule

    def __reduce__(self) -> tuple[type[InvalidModelName], tuple[str, str, str]]:
        # Raised in the CPU worker process too, and unpickled by the caller from these.
        return (type(self), (self.what, self.shown, self.rule))


class UnsupportedRequestType(Exception):
    """The provider has no endpoint for this request type."""

    def __init__(self, request_type: RequestType) -> None:
        super().__init__(request_type.value)
        self.request_type = request_type

    def __reduce__(self) -> tuple[type[UnsupportedRequestType], tuple[RequestType]]:
        return (type(self), (self.request_type,))


@dataclass(frozen=True)
class Answer:
    """A provider's HTTP answer, as the pure decoders see it."""

    status: int
    headers: Mapping[str, str]  # names in lower case
    content_type: str
    body: bytes

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; ValueError when it is not one (a broken upstream)."""
        parsed = json.loads(self.body)
        if not isinstance(parsed, dict):
            raise ValueError("the answer is JSON but not an object")
        return parsed


Decode = Callable[[Answer, datetime], dict[str, Any]]


def prepared_for_storage(decode: Decode, answer: Answer, now: datetime) -> PreparedResult:
    """Runs in the CPU worker: the answer decoded, then encoded as it will be stored."""
    return results.prepare(decode(answer, now))


@dataclass(frozen=True)
class WireCall:
    """One request on the wire, and how to read its successful answer."""

    url: str  # complete, query string included
    body: bytes
    content_type: str
    # answer, now -> the unified (OpenAI-shaped) JSON body; raises ValueError if unreadable.
    # Picklable (a functools.partial of a module-level function): it may run in the worker.
    decode: Decode
    headers: Mapping[str, str] = field(default_factory=dict)  # never secrets


class WireFormat(Protocol):
    """The pure half of a provider: everything but the sending."""

    def build(self, request: ProviderRequest) -> WireCall:
        """Raises BadRequestBody or UnsupportedRequestType."""
        ...

    def auth_headers(self, key: str) -> dict[str, str]: ...

    def error(self, answer: Answer, now: datetime) -> ProviderError: ...

    def rejects_key(self, error: ProviderError) -> bool:
        """Whether another key may succeed where this one failed."""
        ...


def rejects_key_by_status(error: ProviderError) -> bool:
    return error.status_code in ROTATE_KEY_STATUSES


class CommonWire:
    """What most wire formats share, so each overrides only where its provider differs:
    a bearer key, error bodies in OpenAI's `{"error": {...}}` shape (Anthropic, Azure and
    Cohere answer that way too), and the next key on 401/429."""

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def error(self, answer: Answer, now: datetime) -> ProviderError:
        return openai_errors.error_from_response(answer.status, answer.headers, answer.body, now)

    def rejects_key(self, error: ProviderError) -> bool:
        return rejects_key_by_status(error)


def utc_now() -> datetime:
    return datetime.now(UTC)


class HttpProvider:
    """Sends a wire format's requests; raises ProviderError on any failure."""

    def __init__(
        self,
        name: str,
        wire: WireFormat,
        *,
        keys: Sequence[ApiKey] = (),
        key_required: bool = True,
        timeout_seconds: float = 120.0,
        max_connections: int = 64,
        headers: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utc_now,
        worker: CpuWorker | None = None,
        offload: Callable[[bytes], bool] = cpu_worker.is_heavy,
    ) -> None:
        self.name = name
        self.wire = wire
        self._worker = worker
        # Which request and answer bodies are worked on in the worker rather than inline.
        self._offload = offload
        self._keys = tuple(keys)
        self._key_required = key_required
        self._timeout_seconds = timeout_seconds
        self._max_connections = max_connections
        self._extra_headers = dict(headers or {})
        self._rng = rng or random.Random()
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        # Opened lazily so it belongs to the running loop, sized to the concurrency limit.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=self._timeout_seconds),
                raise_for_status=False,
            )
        return self._session

    async def call(self, request: ProviderRequest) -> ProviderResult:
        try:
            wire = await self._build(request)
        except InvalidModelName as error:
            refusal = failures.invalid_model_name(self.name, error.what, error.shown, error.rule)
            raise refusal from error
        except BadRequestBody as error:
            raise failures.invalid_request(str(error)) from error
        except UnsupportedRequestType as error:
            raise failures.unsupported(error.request_type.value, self.name) from error
        if not self._keys:
            if self._key_required:
                raise ProviderError(
                    f"provider {self.name} has no API key configured",
                    status_code=None,
                    retryable=False,
                    error_type="configuration_error",
                )
            # Self-hosted servers (vLLM, Ollama) often take no key at all.
            return await self._send(wire, None)
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
                return await self._send(wire, key)
            except ProviderError as error:
                if not self.wire.rejects_key(error):
                    raise
        # The last key's failure is the call's failure, Retry-After included.
        return await self._send(wire, keys[-1])

    async def _build(self, request: ProviderRequest) -> WireCall:
        """The wire call of a request. Building one parses the stored body and writes the
        provider's; for a body with many JSON values that runs in the CPU worker process
        (core/cpu_worker.py), since the parse would hold the loop and every other job."""
        if not self._offload(request.body):
            return self.wire.build(request)
        try:
            return await (self._worker or cpu_worker.shared()).run(self.wire.build, request)
        except (cpu_worker.WorkerBusy, cpu_worker.WorkerStopped) as error:
            raise ProviderError(
                "the operator is busy preparing large requests; retry shortly"
                if isinstance(error, cpu_worker.WorkerBusy)
                else "the operator's worker stopped while preparing the request",
                status_code=None,
                retryable=True,
            ) from None

    async def _send(self, wire: WireCall, key: ApiKey | None) -> ProviderResult:
        headers = {**self._extra_headers, **wire.headers, "Content-Type": wire.content_type}
        if key is not None:
            headers.update(self.wire.auth_headers(key.value))
        session = self._open_session()
        try:
            # Never follow a redirect: the key travels in a header, and aiohttp would send
            # it (with the prompt) to whatever host the Location names.
            async with session.post(
                wire.url, data=wire.body, headers=headers, allow_redirects=False
            ) as response:
                answer = Answer(
                    status=response.status,
                    headers={k.lower(): v for k, v in response.headers.items()},
                    content_type=response.headers.get("Content-Type", ""),
                    # Joined off the loop: an answer may be tens of MiB.
                    body=await large_bytes.read_all(response.content, MAX_ANSWER_BYTES),
                )
        except large_bytes.BodyTooLarge:
            raise ProviderError(
                f"provider {self.name} answered with more than {MAX_ANSWER_BYTES >> 20} MiB; "
                "the answer was not read",
                status_code=502,
                retryable=False,
                error_type="answer_too_large",
            ) from None
        except TimeoutError as error:
            raise failures.timeout_error(self._timeout_seconds) from error
        except aiohttp.ClientError as error:
            log.warning("provider %s: %s", self.name, str(error) or type(error).__name__)
            raise failures.connection_error(self.name) from error
        now = self._clock()
        if 300 <= answer.status < 400:
            raise failures.redirected(self.name, answer.status, answer.headers.get("location"))
        if not 200 <= answer.status < 300:
            raise self.wire.error(answer, now)
        try:
            return await self._decode(wire.decode, answer, now)
        except (ValueError, KeyError, TypeError) as error:
            # Never the body itself in the message: it is user content.
            raise ProviderError(
                f"provider answered HTTP {answer.status} with a body that cannot be read "
                f"({type(error).__name__})",
                status_code=None,
                retryable=True,
                error_type="invalid_response",
            ) from error

    async def _decode(self, decode: Decode, answer: Answer, now: datetime) -> ProviderResult:
        """The result of a successful answer. A large one (2,048 embeddings of 3,072
        values is about 40 MiB of JSON) is decoded, translated and encoded for storage in
        the CPU worker process: on the loop that took seconds, during which no other job
        was served and no Lease renewed. A small one costs less than the trip there."""
        if not self._offload(answer.body):
            return ProviderResult(body=decode(answer, now))
        try:
            prepared = await (self._worker or cpu_worker.shared()).run(
                prepared_for_storage, decode, answer, now
            )
        except (cpu_worker.WorkerBusy, cpu_worker.WorkerStopped) as error:
            raise ProviderError(
                "the operator is busy reading large answers; retry shortly"
                if isinstance(error, cpu_worker.WorkerBusy)
                else "the operator's worker stopped while reading the answer",
                status_code=None,
                retryable=True,
            ) from None
        return ProviderResult(prepared=prepared)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
        # Give the connector's transports a moment to close, as aiohttp recommends, so no
        # "unclosed transport" warning fires when the loop ends.
        await asyncio.sleep(0)
