"""Deletes terminal jobs when their results expire.

One timer for all jobs (a heap ordered by expiresAt) instead of a sleeping task per
job: a busy hour leaves tens of thousands of terminal jobs waiting for their TTL. The
AsyncJob is deleted with background propagation; its Secrets go through their owner
references (Kubernetes garbage collection), which costs the operator nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from asyncjobs.core.kube import KubeError

log = logging.getLogger(__name__)

Deleter = Callable[[str, str], Awaitable[None]]


class Expiry:
    def __init__(self, delete: Deleter, wall: Callable[[], datetime]) -> None:
        self._delete = delete
        self._wall = wall
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

    async def run(self) -> None:
        """Deletes each job at its time; runs until cancelled."""
        while True:
            self._changed.clear()
            delay = self._next_delay()
            if delay is None or delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=delay)
                continue
            at, name, uid = heapq.heappop(self._heap)
            if self._due.get(name) != (at, uid):
                continue  # rescheduled or forgotten since
            del self._due[name]
            try:
                await self._delete(name, uid)
            except KubeError as error:
                # The next listing (a restart) or watch event schedules it again.
                log.warning("could not delete expired job %s (%s)", name, error.status)

    def _next_delay(self) -> float | None:
        while self._heap:
            at, name, uid = self._heap[0]
            if self._due.get(name) == (at, uid):
                break
            heapq.heappop(self._heap)  # a stale entry
        if not self._heap:
            return None
        return max(0.0, (self._heap[0][0] - self._wall()).total_seconds())
