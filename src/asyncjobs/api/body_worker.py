"""Submits whose JSON body holds many values are validated in the CPU worker process
(core/cpu_worker.py explains why and how), so a large submit never holds the API's loop.

The API's side of it: which bodies go there (JSON ones the worker's count calls heavy;
multipart parsing is bounded by its part limits and stays on the loop) and the answers
when the worker cannot take one: 503 with Retry-After, nothing written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from asyncjobs.api.errors import ApiError
from asyncjobs.core.cpu_worker import CpuWorker, WorkerBusy, WorkerStopped, is_heavy

RETRY_AFTER_SECONDS = "1"
BUSY = "too many large request bodies are being parsed; retry shortly"
STOPPED = "the request body could not be parsed (the parser stopped); retry shortly"

P = ParamSpec("P")
T = TypeVar("T")


class BodyWorker:
    """`function(*args)` inline for a light body, in the worker for a heavy one."""

    def __init__(self, worker: CpuWorker | None = None) -> None:
        self._worker = worker or CpuWorker()

    async def run(
        self, body: bytes, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if not is_heavy(body):
            return function(*args, **kwargs)
        try:
            return await self._worker.run(function, *args, **kwargs)
        except WorkerBusy:
            raise ApiError(503, BUSY, {"Retry-After": RETRY_AFTER_SECONDS}) from None
        except WorkerStopped:
            raise ApiError(503, STOPPED, {"Retry-After": RETRY_AFTER_SECONDS}) from None

    def close(self) -> None:
        self._worker.close()
