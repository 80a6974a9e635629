"""The admission queue: which waiting provider call starts next.

Every job coroutine asks for a slot before it calls a provider and waits here while the
limits in core/limits.py say no. Waiters are kept per provider, ordered by priority (the
job's submission time, so the oldest job goes first, retries included); whenever a slot
frees up, the oldest waiter among the providers that may start a call now gets it. A
saturated or rate-limited provider therefore never holds up jobs for another provider,
and nothing but the granted calls runs: a backlog costs one parked future per job.
A reloaded configuration changes the limits in place (`reconfigure`) and wakes the
queue, so raised limits take effect at once for the jobs already waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from asyncjobs.core.limits import CallBudget, ProviderLimitSpec

Priority = tuple[float, str]
_Waiter = tuple[Priority, int, "asyncio.Future[None]"]


class Admission:
    def __init__(self, budget: CallBudget, clock: Callable[[], float] | None = None) -> None:
        self.budget = budget
        self._clock = clock
        self._waiting: dict[str, list[_Waiter]] = {name: [] for name in budget.providers}
        self._order = itertools.count()
        self._wakeup: asyncio.TimerHandle | None = None
        self._wakeup_at = float("inf")
        # Paused until the operator has seen every listed job, so that after a restart
        # the oldest of the backlog start first, not the first ones listed (by name).
        self.paused = False

    def resume(self) -> None:
        self.paused = False
        self._dispatch()

    def reconfigure(self, max_in_flight: int, limits: Mapping[str, ProviderLimitSpec]) -> None:
        """New limits from the providers file; waiting jobs get any slots they open."""
        self.budget.reconfigure(max_in_flight, limits, self.now())
        for name in limits:
            self._waiting.setdefault(name, [])
        self._dispatch()

    def now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    @property
    def in_flight(self) -> int:
        return self.budget.in_flight

    def waiting(self) -> int:
        return sum(1 for heap in self._waiting.values() for _, _, f in heap if not f.done())

    @asynccontextmanager
    async def slot(self, provider: str, priority: Priority) -> AsyncIterator[None]:
        """Holds one call slot for `provider` for the duration of the block."""
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting[provider], (priority, next(self._order), granted))
        self._dispatch()
        try:
            await granted
        except asyncio.CancelledError:
            # Granted just before the cancellation landed: give the slot back.
            if granted.done() and not granted.cancelled():
                self._release(provider)
            else:
                granted.cancel()
            raise
        try:
            yield
        finally:
            self._release(provider)

    def _release(self, provider: str) -> None:
        self.budget.finish(provider)
        self._dispatch()

    def _dispatch(self) -> None:
        if self.paused:
            return
        now = self.now()
        wake = float("inf")
        while True:
            best: str | None = None
            for name, heap in self._waiting.items():
                while heap and heap[0][2].done():  # cancelled waiters leave lazily
                    heapq.heappop(heap)
                if not heap:
                    continue
                ready = self.budget.ready_at(name, now)
                if ready is None:
                    continue
                if ready > now:
                    wake = min(wake, ready)
                    continue
                if best is None or heap[0] < self._waiting[best][0]:
                    best = name
            if best is None:
                break
            _, _, granted = heapq.heappop(self._waiting[best])
            self.budget.start(best, now)
            granted.set_result(None)
        self._schedule_wakeup(wake, now)

    def _schedule_wakeup(self, at: float, now: float) -> None:
        """A rate-limited provider frees up with time, not with a release: set a timer."""
        if at == float("inf") or (self._wakeup is not None and self._wakeup_at <= at):
            return
        if self._wakeup is not None:
            self._wakeup.cancel()
        self._wakeup_at = at
        self._wakeup = asyncio.get_running_loop().call_later(max(0.0, at - now), self._woken)

    def _woken(self) -> None:
        self._wakeup = None
        self._wakeup_at = float("inf")
        self._dispatch()
