"""CPU-heavy work on a large JSON body runs in a worker process, so no body stalls a loop.

The standard parser holds the GIL for the whole of a parse (and freeing what it built
takes a good part of that again), so a thread would not help: a body at the s3
backend's 25 MiB limit made of small values (about 1.6 million, all the API's value
bound allows) takes 0.2-0.5 s of a quiet core to parse, and longer on a busy one, during
which the API answers no poll and the operator renews no Lease. Work on such a body goes
to one worker process instead: the loop only hands over the bytes and gets back a small
answer. The API validates (and on the provider routes translates) submits there; the
operator's offline `local` provider builds its answers there.

A body is routed by its size and by a count that costs microseconds: its brackets and
commas, which bound how many values a parser builds, whether or not they sit in strings.
Both matter: a 25 MiB body that is one long string (a base64 image) still took the
parser about 200 ms on a busy core. Bodies under 1 MiB with few values (nearly every
request) stay where they are, because for them the parse costs less than the hop to
another process.

One worker runs one job at a time: the memory a parse takes is bounded by one worst body
(about 22 bytes per byte parsed), whatever the number of large bodies in flight, and at
most 32 wait (`WorkerBusy` beyond that). A worker that dies (its memory limit, a
signal) is replaced, and the work it was running raises `WorkerStopped`. The process
starts on first use, from a thread (starting an interpreter takes hundreds of ms on a
busy machine), spawned rather than forked: both processes have threads and a running
loop.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

# Bodies with more brackets and commas than this go to the worker. At the parser's
# 0.1-0.3 µs per value on a loaded core, this many cost a loop 5-15 ms.
INLINE_MAX_MARKS = 50_000
# And bodies larger than this: a string parses at 100-200 MB/s, so 1 MiB costs 5-10 ms.
INLINE_MAX_BYTES = 1 << 20
# Heavy bodies allowed to wait for the worker; later ones are refused until it catches up.
# Each waiting body is already in memory (its request holds it); the bound keeps a burst
# of large submits from queueing without end behind a hostile one.
MAX_WAITING = 32

_NOT_MARK = bytes(sorted(set(range(256)) - set(b"[{,")))

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class WorkerBusy(Exception):
    """More heavy bodies are waiting than allowed: try again shortly."""


class WorkerStopped(Exception):
    """The worker process died while it ran this work (it has been replaced)."""


def structural_marks(body: bytes) -> int:
    """The `[`, `{` and `,` bytes of a body: at least the number of values it holds."""
    return len(body.translate(None, _NOT_MARK))


def is_heavy(body: bytes) -> bool:
    return len(body) > INLINE_MAX_BYTES or structural_marks(body) > INLINE_MAX_MARKS


class CpuWorker:
    """Runs a pure, picklable function in the worker process and returns its result.
    Whether a body is heavy enough to send here is the caller's decision (`is_heavy`)."""

    def __init__(self, executor_factory: Callable[[], Executor] | None = None) -> None:
        self._factory = executor_factory or _spawned_worker
        self._executor: Executor | None = None
        # Running plus waiting; counted, never awaited, so one worker can serve any loop.
        self._taken = 0
        self._unavailable_logged = False
        self._start_lock = threading.Lock()

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._taken > MAX_WAITING:
            raise WorkerBusy()
        self._taken += 1
        try:
            try:
                # Starting a process blocks for as long as the new interpreter takes to
                # start (350 ms measured on a busy machine): never on the loop.
                executor = self._executor
                if executor is None:
                    executor = await asyncio.to_thread(self._start)
            except OSError as error:
                # No process can be started here (multiprocessing's locks need a writable
                # /dev/shm): the work still gets done, on the caller's loop.
                if not self._unavailable_logged:
                    log.warning("the CPU worker process cannot start (%s); working inline", error)
                    self._unavailable_logged = True
                return function(*args, **kwargs)
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(executor, _call, function, args, kwargs)
            except BrokenProcessPool:
                self._replace(executor)
                raise WorkerStopped() from None
        finally:
            self._taken -= 1

    def _start(self) -> Executor:
        """Makes the executor and has its process running before it is used. In a worker
        thread; a second caller waits for the first one's process."""
        with self._start_lock:
            if self._executor is not None:
                return self._executor
            started = self._factory()
            started.submit(warm_up).result()
            self._executor = started
            return started

    def _replace(self, broken: Executor) -> None:
        if self._executor is broken:
            self._executor = None
            broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def warm_up() -> None:
    """Nothing: submitted once, so the worker process is running before real work."""


def _call(function: Callable[..., T], args: tuple[object, ...], kwargs: dict[str, object]) -> T:
    """Runs in the worker. An exception crosses back pickled; one that would not rebuild
    on the other side breaks the whole pool, so such an exception is replaced by one
    that names it (the cause is a bug to fix: an exception type without __reduce__)."""
    try:
        return function(*args, **kwargs)
    except Exception as error:
        try:
            pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes, just made)
        except Exception:
            raise RuntimeError(f"{type(error).__name__}: {error}") from None
        raise


_shared: CpuWorker | None = None


def shared() -> CpuWorker:
    """The process's worker, for code that has no context to carry one (providers)."""
    global _shared
    if _shared is None:
        _shared = CpuWorker()
    return _shared


def _spawned_worker() -> Executor:
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
