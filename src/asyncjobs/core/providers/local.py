"""The offline default provider, `local`: deterministic answers with no network or keys.

It lets the whole system (API, operator, control plane) answer real requests on a laptop
or in CI, and gives benchmarks a provider whose latency is exactly what the
configuration says (`latencyMs`). Answers depend only on the model, the request type and
the request body (plus the clock for `created`), so repeating a request repeats its
answer. A body that cannot be read fails as a non-retryable 400, like a real provider.

Answers are bounded by the provider's `localLimits` (an answer past one fails as a 400
naming the option), and none is built on the operator's event loop, whose stall would
hold every other job's calls, status writes and Lease renewals: a body with many JSON
values (whose parse holds the GIL throughout) is answered in the CPU worker process
(core/cpu_worker.py), any other in a thread, which yields the GIL every few ms while
it builds megabytes of vectors.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from asyncjobs.core import cpu_worker, multipart
from asyncjobs.core.cpu_worker import CpuWorker
from asyncjobs.core.provider_config import LocalLimits
from asyncjobs.core.providers import local_media, local_text
from asyncjobs.core.providers.base import ProviderError, ProviderRequest, ProviderResult
from asyncjobs.core.providers.local_text import Context, OutputBudget
from asyncjobs.core.request_types import REQUEST_TYPES, BodyKind, RequestType

_JSON_ANSWERS: dict[RequestType, Callable[[Context, dict[str, Any]], dict[str, Any]]] = {
    RequestType.TEXT_COMPLETION: local_text.text_completion,
    RequestType.CHAT_COMPLETION: local_text.chat_completion,
    RequestType.RESPONSES: local_text.responses,
    RequestType.EMBEDDING: local_text.embedding,
    RequestType.RERANK: local_text.rerank,
    RequestType.SPEECH: local_media.speech,
    RequestType.IMAGE_GENERATION: local_media.image_generation,
    RequestType.OCR: local_media.ocr,
}

_FORM_ANSWERS: dict[RequestType, Callable[[Context, multipart.Form], dict[str, Any]]] = {
    RequestType.TRANSCRIPTION: local_media.transcription,
    RequestType.IMAGE_EDIT: local_media.image_edit,
    RequestType.IMAGE_VARIATION: local_media.image_edit,
}


def answer(
    request: ProviderRequest, now: float, limits: LocalLimits | None = None
) -> dict[str, Any]:
    """The local provider's response body for a request; pure apart from `now`."""
    limits = limits or LocalLimits()
    seed = hashlib.sha256(
        request.model.encode() + b"\0" + request.request_type.value.encode() + b"\0" + request.body
    ).digest()
    ctx = Context(
        model=request.model,
        seed=seed,
        created=int(now),
        limits=limits,
        budget=OutputBudget(limits.max_output_bytes),
    )
    if REQUEST_TYPES[request.request_type].body is BodyKind.MULTIPART:
        try:
            form = multipart.parse(request.body, request.content_type)
        except multipart.MultipartError as error:
            raise _invalid(f"failed to parse multipart form: {error}") from error
        return _FORM_ANSWERS[request.request_type](ctx, form)
    try:
        body = json.loads(request.body)
    except ValueError as error:
        raise _invalid(f"invalid JSON body: {error}") from error
    if not isinstance(body, dict):
        raise _invalid("the JSON body must be an object")
    return _JSON_ANSWERS[request.request_type](ctx, body)


def _invalid(message: str) -> ProviderError:
    return ProviderError(
        message, status_code=400, retryable=False, error_type="invalid_request_error"
    )


class LocalProvider:
    """Answers every request type offline; `latency_ms` delays each answer, `limits`
    bounds it."""

    def __init__(
        self,
        name: str = "local",
        *,
        latency_ms: float = 0.0,
        limits: LocalLimits | None = None,
        clock: Callable[[], float] = time.time,
        worker: CpuWorker | None = None,
    ) -> None:
        self.name = name
        self._latency_seconds = latency_ms / 1000
        self._limits = limits or LocalLimits()
        self._clock = clock
        self._worker = worker

    async def call(self, request: ProviderRequest) -> ProviderResult:
        if self._latency_seconds > 0:
            await asyncio.sleep(self._latency_seconds)
        now = self._clock()
        if not cpu_worker.is_heavy(request.body):
            return ProviderResult(body=await asyncio.to_thread(answer, request, now, self._limits))
        worker = self._worker or cpu_worker.shared()
        try:
            body = await worker.run(answer, request, now, self._limits)
        except (cpu_worker.WorkerBusy, cpu_worker.WorkerStopped) as error:
            raise ProviderError(
                "the local provider is busy with large requests; retry shortly"
                if isinstance(error, cpu_worker.WorkerBusy)
                else "the local provider's worker stopped while answering",
                status_code=503,
                retryable=True,
                error_type="server_error",
            ) from None
        return ProviderResult(body=body)

    async def close(self) -> None:
        """Nothing pooled to release."""
