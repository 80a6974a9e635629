"""The provider interface: one call that turns a stored request into a unified result.

Bifrost's provider interface has some fifty methods; ours has one, because every request
type is "send this body, get a JSON body back" once the request type is data. A provider
raises ProviderError for anything that is not a success, carrying what the failure policy
needs (status code, whether to retry, Retry-After) and what the client will see (the
provider's error type, code, message and param).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Protocol

from asyncjobs.core import results
from asyncjobs.core.request_types import RequestType
from asyncjobs.core.results import PreparedResult


@dataclass(frozen=True)
class ProviderRequest:
    request_type: RequestType
    model: str  # the model name without the "provider/" prefix
    body: bytes  # exactly as the client sent it (JSON, or multipart/form-data)
    content_type: str


@dataclass(frozen=True)
class ProviderResult:
    body: dict[str, Any] = field(default_factory=dict)  # the synchronous endpoint's JSON
    status_code: int = 200
    # A large answer, decoded and encoded for storage in the CPU worker process, arrives
    # as this instead of `body` (then empty): the operator's loop never holds it as objects.
    prepared: PreparedResult | None = None

    def for_storage(self) -> PreparedResult:
        return self.prepared if self.prepared is not None else results.prepare(self.body)


class ProviderError(Exception):
    """A call that did not succeed.

    status_code is the provider's HTTP status, or None when no answer came (timeout,
    connection refused). retryable follows the failure policy: 429, 5xx, timeouts and
    connection errors may pass; other 4xx will not.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None,
        retryable: bool,
        retry_after: float | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after = retry_after
        self.error_type = error_type
        self.code = code
        self.param = param

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in the CPU worker process too (the local provider's refusals), and
        # unpickled by the caller: an exception whose arguments do not rebuild it would
        # break the worker pool instead.
        return (_rebuilt_provider_error, (self.message, dict(self.__dict__)))


def _rebuilt_provider_error(message: str, fields: dict[str, Any]) -> ProviderError:
    error = ProviderError(message, status_code=None, retryable=False)
    error.__dict__.update(fields)
    return error


class Provider(Protocol):
    name: str

    async def call(self, request: ProviderRequest) -> ProviderResult:
        """Runs one request; raises ProviderError on anything but success."""
        ...

    async def close(self) -> None:
        """Releases pooled connections."""
        ...


def speech_result(audio: bytes, content_type: str) -> dict[str, Any]:
    """The JSON a speech job stores: the audio base64-encoded, and its media type.

    Bifrost's speech response carries the audio as base64 under `audio`; `content_type`
    is ours, so a client knows how to decode it (mp3, wav, opus...) without sniffing.
    """
    return {"audio": base64.b64encode(audio).decode("ascii"), "content_type": content_type}
