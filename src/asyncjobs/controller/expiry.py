"""Deletes terminal jobs when their results expire.

One timer for all jobs (a heap ordered by expiresAt) instead of a sleeping task per
job: a busy hour leaves tens of thousands of terminal jobs waiting for their TTL. The
AsyncJob is deleted with background propagation; its Secrets go through their owner
references (Kubernetes garbage collection), which costs the operator nothing. A delete
that fails is tried again after a growing pause, so an apiserver outage does not leave
expired jobs behind until the next restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from asyncjobs.core.kube import KubeError

log = logging.getLogger(__name__)

Deleter = Callable[[str, str], Awaitable[None]]
# wait(changed, seconds) returns once `changed` is set or `seconds` have passed (None: on a
# change only). Injected with the wall clock, so tests move time by hand and see each wait.
Waiter = Callable[[asyncio.Event, float | None], Awaitable[None]]

# Pauses before a failed delete is tried again; the last one repeats.
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


async def wait_for_change(changed: asyncio.Event, seconds: float | None) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(changed.wait(), timeout=seconds)


class Expiry:
    def __init__(
        self,
        delete: Deleter,
        wall: Callable[[], datetime],
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        wait: Waiter = wait_for_change,
    ) -> None:
        self._delete = delete
        self._wall = wall
        self._retry_delays = retry_delays
        self._wait = wait
        self._failures: dict[str, int] = {}
        self._heap: list[tuple[datetime, str, str]] = []
        self._due: dict[str, tuple[datetime, str]] = {}
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, name: str, uid: str, at: datetime) -> None:
        if self._due.get(name) == (at, uid):
            return
        self._due[name] = (at, uid)
        heapq.heappush(self._heap, (at, name, uid))
        if self._heap[0][1] == name:
            self._changed.set()

    def forget(self, name: str) -> None:
        self._due.pop(name, None)
        self._failures.pop(name, None)

    async def run(self) -> None:
        """Deletes each job at its time; runs until cancelled."""
        while True:
            self._changed.clear()
            delay = self._next_delay()
            if delay is None or delay > 0:
                await self._wait(self._changed, delay)
                continue
            at, name, uid = heapq.heappop(self._heap)
            if self._due.get(name) != (at, uid):
                continue  # rescheduled or forgotten since
            del self._due[name]
            try:
                await self._delete(name, uid)
            except (KubeError, OSError) as error:
                self._retry_later(name, uid, error)
            else:
                self._failures.pop(name, None)

    def _retry_later(self, name: str, uid: str, error: Exception) -> None:
        failures = self._failures.get(name, 0)
        self._failures[name] = failures + 1
        delay = self._retry_delays[min(failures, len(self._retry_delays) - 1)]
        log.warning("could not delete expired job %s (%s); retrying in %gs", name, error, delay)
        self.schedule(name, uid, self._wall() + timedelta(seconds=delay))

    def _next_delay(self) -> float | None:
        while self._heap:
            at, name, uid = self._heap[0]
            if self._due.get(name) == (at, uid):
                break
            heapq.heappop(self._heap)  # a stale entry
        if not self._heap:
            return None
        return max(0.0, (self._heap[0][0] - self._wall()).total_seconds())
