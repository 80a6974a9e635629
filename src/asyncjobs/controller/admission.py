"""The admission queue: which waiting provider call starts next.

Every job coroutine asks for a slot before it calls a provider and waits here while the
limits in core/limits.py say no. Waiters are kept per virtual key (their fair-share
group) and per provider; whenever a slot frees up, the group furthest behind its
weighted share gets it (controller/fair_queue.py), and within that group the first in
order (the job's priority, then its submission time, retries included) among the
providers that may start a call now. One key's backlog therefore never holds up another
key's jobs beyond its share, a saturated or rate-limited provider never holds up jobs
for another provider, and nothing but the granted calls runs: a backlog costs one
parked future per job. With fair share off (`fair_share=False`, for comparison) every
job is in one group, which is oldest first across all keys.
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
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from asyncjobs.controller.fair_queue import FairQueue, Order
from asyncjobs.core.cooldown import signal_of
from asyncjobs.core.fair_share import ANONYMOUS, DEFAULT_WEIGHT
from asyncjobs.core.limits import CallBudget, ProviderLimitSpec
from asyncjobs.core.providers.base import ProviderError, ProviderResult

# A waiter's place within its group: lowest first, e.g. (-priority, submitted, name).
Priority = Order


@dataclass(frozen=True)
class _Waiter:
    granted: asyncio.Future[bool]
    deadline: float  # on the admission clock


def _waiting(waiter: _Waiter) -> bool:
    return not waiter.granted.done()


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
    def __init__(
        self,
        budget: CallBudget,
        clock: Callable[[], float] | None = None,
        *,
        fair_share: bool = True,
    ) -> None:
        self.budget = budget
        self._clock = clock
        self.fair_share = fair_share
        self._queue: FairQueue[_Waiter] = FairQueue(_waiting)
        self._providers: set[str] = set(budget.providers)
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
        self._providers.update(limits)
        self._dispatch()

    def now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    @property
    def in_flight(self) -> int:
        return self.budget.in_flight

    def waiting(self) -> int:
        return sum(1 for waiter in self._queue.items() if _waiting(waiter))

    def waiting_by_group(self) -> dict[str, int]:
        """Jobs waiting per fair-share group (virtual key id; "" for no key)."""
        return self._queue.waiting_by_group()

    def cooling_down(self) -> int:
        """Providers whose calls are held now."""
        now = self.now()
        return sum(1 for name in self._providers if self.budget.cooling_down(name, now) is not None)

    def held(self) -> int:
        """Jobs waiting for a provider whose calls are held."""
        now = self.now()
        return sum(
            1
            for name in self._providers
            if self.budget.cooling_down(name, now) is not None
            for waiter in self._queue.items(name)
            if _waiting(waiter)
        )

    @asynccontextmanager
    async def slot(
        self,
        provider: str,
        priority: Priority,
        deadline: float = float("inf"),
        *,
        group: str = ANONYMOUS,
        weight: int = DEFAULT_WEIGHT,
    ) -> AsyncIterator[Call]:
        """Holds one call slot for `provider` for the duration of the block, waiting in
        `group` (of `weight`) at `priority`; raises ProviderCoolingDown when the
        provider's calls are held past `deadline`."""
        until = self.budget.cooling_down(provider, self.now())
        if until is not None and until > deadline:
            raise ProviderCoolingDown(provider, until, self.budget.cooldown_cause(provider))
        granted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if not self.fair_share:
            group, weight = ANONYMOUS, DEFAULT_WEIGHT
        self._providers.add(provider)
        self._queue.push(group, weight, provider, priority, _Waiter(granted, deadline))
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
        for waiter in self._queue.items(provider):
            if waiter.deadline < until and _waiting(waiter):
                waiter.granted.set_exception(ProviderCoolingDown(provider, until, cause))

    def _dispatch(self) -> None:
        if self.paused:
            return
        now = self.now()
        wake = float("inf")
        while True:
            ready: set[str] = set()
            for name in self._queue.lanes_waiting():
                at = self.budget.ready_at(name, now)
                if at is None:
                    continue
                if at > now:
                    wake = min(wake, at)
                    continue
                ready.add(name)
            chosen = self._queue.pop(ready)
            if chosen is None:
                break
            provider, waiter = chosen
            waiter.granted.set_result(self.budget.start(provider, now))
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
