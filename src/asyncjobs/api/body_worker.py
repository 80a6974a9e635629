"""Large JSON bodies are parsed in a worker process, so no submit stalls the event loop.

The standard parser holds the GIL for the whole of a parse, so a thread would not help:
a body at the s3 backend's 25 MiB limit made of small values (about 1.6 million of them,
all the value bound allows) takes 200-450 ms of one core to parse, and every poll on
the replica would wait that long. Such a body goes to one worker process instead; the
loop only hands over the bytes and gets back the small decision (Accepted or Rejected,
and the bytes to store). A body is routed by a count that costs microseconds: its
brackets and commas, which bound how many values the parser builds, whether or not they
sit in strings. Ordinary bodies, even large ones (a base64 image is one string), stay
on the loop, where the parse costs less than the hop to another process.

One worker parses one body at a time: memory spent parsing is bounded by one worst body
(about 22 bytes per byte parsed), whatever the number of large submits in flight, and a
few waiting at most; more are answered 503 with Retry-After. A worker that dies (its
memory limit, a signal) is replaced; the submit it was parsing answers 503.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

from asyncjobs.api.errors import ApiError

# Bodies with more brackets and commas than this are parsed in the worker. At the
# parser's ~0.1-0.3 µs per value on a loaded core, this many cost the loop 5-15 ms.
INLINE_MAX_MARKS = 50_000
# Large submits allowed to wait for the worker; later ones are refused until it catches up.
MAX_WAITING = 4
RETRY_AFTER_SECONDS = "1"

_NOT_MARK = bytes(sorted(set(range(256)) - set(b"[{,")))

P = ParamSpec("P")
T = TypeVar("T")


def structural_marks(body: bytes) -> int:
    """The `[`, `{` and `,` bytes of a body: at least the number of values it holds."""
    return len(body.translate(None, _NOT_MARK))


def parses_in_worker(body: bytes) -> bool:
    return structural_marks(body) > INLINE_MAX_MARKS


class BodyWorker:
    """Runs a pure, picklable function of a large body in the worker process; small
    bodies run it inline. The worker starts on first use (spawned, not forked: the API
    has threads and a running loop)."""

    def __init__(self, executor_factory: Callable[[], Executor] | None = None) -> None:
        self._factory = executor_factory or _spawned_worker
        self._executor: Executor | None = None
        self._slots = asyncio.Semaphore(MAX_WAITING + 1)

    async def run(
        self, body: bytes, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if not parses_in_worker(body):
            return function(*args, **kwargs)
        if self._slots.locked():
            raise ApiError(
                503,
                "too many large request bodies are being parsed; retry shortly",
                {"Retry-After": RETRY_AFTER_SECONDS},
            )
        async with self._slots:
            executor = self._executor or self._start()
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(executor, _call, function, args, kwargs)
            except BrokenProcessPool:
                self._replace(executor)
                raise ApiError(
                    503,
                    "the request body could not be parsed (the parser stopped); retry shortly",
                    {"Retry-After": RETRY_AFTER_SECONDS},
                ) from None

    def _start(self) -> Executor:
        self._executor = self._factory()
        return self._executor

    def _replace(self, broken: Executor) -> None:
        if self._executor is broken:
            self._executor = None
            broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _call(function: Callable[..., T], args: tuple[object, ...], kwargs: dict[str, object]) -> T:
    return function(*args, **kwargs)


def _spawned_worker() -> Executor:
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
