"""The admission queue: which waiting provider call starts next.

Every job coroutine asks for a slot before it calls a provider and waits here while the
limits in core/limits.py say no. Waiters are kept per provider, ordered by priority (the
job's submission time, so the oldest job goes first, retries included); whenever a slot
frees up, the oldest waiter among the providers that may start a call now gets it. A
saturated or rate-limited provider therefore never holds up jobs for another provider,
and nothing but the granted calls runs: a backlog costs one parked future per job.
A reloaded configuration changes the limits in place (`reconfigure`) and wakes the
queue, so raised limits take effect at once for the jobs already waiting.

Each granted call reports its outcome (`Call.report`) before its slot is released, so a
429 or a run of 5xx opens the provider's circuit breaker (core/cooldown.py) before the
next waiter could be granted: the jobs waiting for that provider stay here, spending no
attempt, until the cooldown ends and a probe call succeeds. A waiter whose deadline
comes before the cooldown ends is told at once (ProviderCoolingDown) rather than left
to time out.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from asyncjobs.core.cooldown import signal_of
from asyncjobs.core.limits import CallBudget, ProviderLimitSpec
from asyncjobs.core.providers.base import ProviderError, ProviderResult

Priority = tuple[float, str]
# (priority, arrival order, granted, deadline on the admission clock)
_Waiter = tuple[Priority, int, "asyncio.Future[bool]", float]


class ProviderCoolingDown(Exception):
    """The provider's calls are held until `until` (the admission clock), after the
    waiting job's deadline."""

    def __init__(self, provider: str, until: float, cause: str) -> None:
        super().__init__(f"provider {provider} is cooling down ({cause})")
        self.provider = provider
        self.until = until
        self.cause = cause  # cooldown.CAUSE_THROTTLED or CAUSE_FAILING


class Call:
    """A granted call slot; the call reports how it went before the slot is released."""

    def __init__(self, admission: Admission, provider: str, probe: bool) -> None:
        self._admission = admission
        self.provider = provider
        self.probe = probe
        self.recorded = False

    def report(self, outcome: ProviderResult | ProviderError) -> None:
        self.recorded = True
        self._admission._report(self, outcome)


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
        # Told (provider, cause) whenever a provider's cooldown starts (a metric).
        self.on_cooldown: Callable[[str, str], None] | None = None

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
        return sum(1 for heap in self._waiting.values() for _, _, f, _ in heap if not f.done())

    def cooling_down(self) -> int:
        """Providers whose calls are held now."""
        now = self.now()
        return sum(1 for name in self._waiting if self.budget.cooling_down(name, now) is not None)

    def held(self) -> int:
        """Jobs waiting for a provider whose calls are held."""
        now = self.now()
        return sum(
            1
            for name, heap in self._waiting.items()
            if self.budget.cooling_down(name, now) is not None
            for _, _, granted, _ in heap
            if not granted.done()
        )

    @asynccontextmanager
    async def slot(
        self, provider: str, priority: Priority, deadline: float = float("inf")
    ) -> AsyncIterator[Call]:
        """Holds one call slot for `provider` for the duration of the block; raises
        ProviderCoolingDown when the provider's calls are held past `deadline`."""
        until = self.budget.cooling_down(provider, self.now())
        if until is not None and until > deadline:
            raise ProviderCoolingDown(provider, until, self.budget.cooldown_cause(provider))
        granted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting[provider], (priority, next(self._order), granted, deadline))
        self._dispatch()
        try:
            probe = await granted
        except asyncio.CancelledError:
            # Granted just before the cancellation landed: give the slot back.
            if granted.done() and not granted.cancelled():
                self._release(Call(self, provider, granted.result()))
            else:
                granted.cancel()
            raise
        call = Call(self, provider, probe)
        try:
            yield call
        finally:
            self._release(call)

    def _release(self, call: Call) -> None:
        self.budget.finish(call.provider, probe=call.probe, recorded=call.recorded)
        self._dispatch()

    def _report(self, call: Call, outcome: ProviderResult | ProviderError) -> None:
        retry_after = outcome.retry_after if isinstance(outcome, ProviderError) else None
        cause = self.budget.record(
            call.provider, signal_of(outcome), retry_after, self.now(), probe=call.probe
        )
        if cause is not None and self.on_cooldown is not None:
            self.on_cooldown(call.provider, cause)
        self._turn_away_late(call.provider)

    def _turn_away_late(self, provider: str) -> None:
        """Waiters whose deadline comes before the provider's cooldown ends hear it now."""
        until = self.budget.cooling_down(provider, self.now())
        if until is None:
            return
        cause = self.budget.cooldown_cause(provider)
        for _, _, granted, deadline in self._waiting[provider]:
            if deadline < until and not granted.done():
                granted.set_exception(ProviderCoolingDown(provider, until, cause))

    def _dispatch(self) -> None:
        if self.paused:
            return
        now = self.now()
        wake = float("inf")
        while True:
            best: str | None = None
            for name, heap in self._waiting.items():
                while heap and heap[0][2].done():  # cancelled or turned-away waiters leave lazily
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
            _, _, granted, _ = heapq.heappop(self._waiting[best])
            granted.set_result(self.budget.start(best, now))
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
