"""A provider's circuit breaker: when the operator stops calling a provider that is overloaded.

A 429, or a run of 5xx answers and calls that got no answer, says the provider cannot
take more work now. Calling it again at once only spends the attempts of the jobs
waiting for it, so the breaker opens: no call to that provider starts until the
cooldown ends (the admission queue holds the waiting jobs, which spend nothing). Then
one call goes through as a probe (half-open); its success closes the breaker, its
failure opens it again for longer.

The breaker is per provider (an entry of the providers file), not per API key: a call
already moves to the provider's next key on a 429 (core/providers/transport.py), so a
429 the operator sees means every key that serves the model was throttled.

How long a cooldown lasts: the provider's Retry-After when it sent one, at least the
breaker's own exponential backoff (which grows with each consecutive opening, so a long
storm costs one probe per ever longer cooldown), never more than `max_seconds` (a
Retry-After of hours must not stop the provider for hours without a probe), plus a
random spread so that operators and shards sharing a provider do not probe together.

Pure: every method takes the time (the admission queue's monotonic clock) and the
random spread comes from an injected source, so the rules are table-tested.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from asyncjobs.core.providers.base import ProviderError, ProviderResult


@dataclass(frozen=True)
class CooldownPolicy:
    # Consecutive 5xx answers or calls with no answer that open the breaker (one 429 does).
    failures_to_open: int = 5
    # The first cooldown without a Retry-After; doubles with each consecutive opening.
    base_seconds: float = 2.0
    # The longest cooldown, Retry-After included.
    max_seconds: float = 300.0
    # Up to this fraction is added to every cooldown, drawn at random.
    jitter: float = 0.2


class Signal(enum.Enum):
    """What a finished call says about the provider's health."""

    HEALTHY = "healthy"  # an answer that is not overload: success, or a 4xx about the request
    THROTTLED = "throttled"  # 429
    FAILING = "failing"  # 5xx, timeout, connection error


def signal_of(outcome: ProviderResult | ProviderError) -> Signal:
    if isinstance(outcome, ProviderResult):
        return Signal.HEALTHY
    if outcome.status_code == 429:
        return Signal.THROTTLED
    # A failure that will not be retried (a 4xx, a provider gone from the configuration)
    # says nothing about overload.
    if outcome.retryable and (outcome.status_code is None or outcome.status_code >= 500):
        return Signal.FAILING
    return Signal.HEALTHY


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"  # until `until`; then half-open: the next call is a probe


# Why a cooldown started (a metric label).
CAUSE_THROTTLED = "throttled"
CAUSE_FAILING = "failing"


@dataclass
class Breaker:
    policy: CooldownPolicy = field(default_factory=CooldownPolicy)
    rng: random.Random = field(default_factory=random.Random)
    state: State = State.CLOSED
    until: float = 0.0
    # Consecutive FAILING calls while closed.
    failures: int = 0
    # Consecutive openings (a probe that failed counts); sets the backoff.
    openings: int = 0
    # A probe is in flight: no other call starts until it ends.
    probing: bool = False
    # Why the breaker last opened (CAUSE_*).
    cause: str = ""

    def ready_at(self, now: float) -> float | None:
        """When a call may start: now, `until` (cooling down), or None (wait for the
        probe in flight to end)."""
        if self.state is State.CLOSED:
            return now
        if now < self.until:
            return self.until
        return None if self.probing else now

    def cooling_down(self, now: float) -> bool:
        """Calls are held: the cooldown runs, or its probe has not answered yet."""
        return self.state is State.OPEN and (now < self.until or self.probing)

    def start(self, now: float) -> bool:
        """A call starts; True when it is the half-open probe."""
        if self.state is State.OPEN and now >= self.until:
            self.probing = True
            return True
        return False

    def abandoned(self, probe: bool) -> None:
        """A call ended without an outcome (cancelled): a probe's place goes to the next call."""
        if probe:
            self.probing = False

    def record(
        self, signal: Signal, retry_after: float | None, now: float, *, probe: bool
    ) -> str | None:
        """A call ended; the cause when this opened a new cooldown, else None."""
        if probe:
            self.probing = False
        if signal is Signal.HEALTHY:
            # Calls started before the breaker opened may still answer while it is open;
            # only the probe's answer says the provider has recovered.
            if self.state is State.CLOSED or probe:
                self._close()
            return None
        if signal is Signal.FAILING and self.state is State.CLOSED:
            self.failures += 1
            if self.failures < self.policy.failures_to_open:
                return None
        if self.state is State.OPEN and not probe:
            # A call that was in flight when the breaker opened: it may lengthen the
            # cooldown to the provider's Retry-After, but it is not another opening.
            if signal is Signal.THROTTLED and retry_after is not None:
                self.until = max(self.until, now + self._bounded(retry_after))
            return None
        self.cause = CAUSE_THROTTLED if signal is Signal.THROTTLED else CAUSE_FAILING
        self._open(retry_after, now)
        return self.cause

    def _open(self, retry_after: float | None, now: float) -> None:
        backoff = self.policy.base_seconds * 2.0**self.openings
        wait = backoff if retry_after is None else max(backoff, retry_after)
        self.state = State.OPEN
        self.until = now + self._bounded(wait)
        self.openings += 1
        self.failures = 0

    def _bounded(self, seconds: float) -> float:
        capped = min(max(seconds, 0.0), self.policy.max_seconds)
        return capped * (1 + self.policy.jitter * self.rng.random())

    def _close(self) -> None:
        self.state = State.CLOSED
        self.failures = 0
        self.openings = 0
