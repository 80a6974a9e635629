"""How many provider calls may start now: the accounting behind bounded, fair concurrency.

Three limits apply to every call: a global number of calls in flight (so ten thousand
pending jobs never mean ten thousand calls), a number in flight per provider, and a
request rate per provider (requests per minute). A fourth holds all calls to a provider
that is overloaded: its circuit breaker (core/cooldown.py), opened by a 429 or a run of
5xx answers. This module only counts, with the time
passed in, so the rules are unit-tested without sleeping; the operator's admission
queue (controller/admission.py) decides who waits and who goes first.

Limits change at run time when the providers file is reloaded (`reconfigure`): the
calls in flight stay counted against the new limits, and a rate limit keeps the tokens
already earned, so a reload never opens a burst the configuration did not allow.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from asyncjobs.core.cooldown import Breaker, CooldownPolicy, Signal


class TokenBucket:
    """A requests-per-minute limit as a token bucket.

    The bucket holds at most one second's worth of requests (at least one), so a
    provider limited to 600/min sees about 10 calls a second, never 600 at once after a
    quiet minute: providers count in windows shorter than their advertised minute.
    """

    def __init__(self, per_minute: int, now: float, *, burst: int | None = None) -> None:
        self.rate = per_minute / 60.0
        # `burst` overrides the one second's worth (the API's submit limit lets a client
        # send a batch at once, then holds it to the rate).
        self.burst = burst
        self.capacity = self._capacity()
        self.tokens = self.capacity
        self.updated = now

    def _capacity(self) -> float:
        return float(self.burst) if self.burst else max(1.0, math.ceil(self.rate))

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def ready_at(self, now: float) -> float:
        """The earliest time a token is available (now, if one is)."""
        self._refill(now)
        if self.tokens >= 1:
            return now
        return now + (1 - self.tokens) / self.rate

    def retune(self, per_minute: int, now: float, *, burst: int | None = None) -> None:
        """A new rate: tokens earned at the old rate until now are kept, up to the new
        capacity, rather than starting full (a full bucket would be a fresh burst)."""
        self._refill(now)
        self.rate = per_minute / 60.0
        self.burst = burst
        self.capacity = self._capacity()
        self.tokens = min(self.tokens, self.capacity)

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1


class ProviderLimitSpec(Protocol):
    """A provider's configured limits (core/providers/registry.py ProviderLimits)."""

    @property
    def max_concurrency(self) -> int: ...

    @property
    def requests_per_minute(self) -> int | None: ...


@dataclass
class ProviderBudget:
    max_concurrency: int
    bucket: TokenBucket | None
    breaker: Breaker
    in_flight: int = 0


@dataclass
class CallBudget:
    """Calls in flight, globally and per provider, against their limits."""

    max_in_flight: int
    providers: dict[str, ProviderBudget] = field(default_factory=dict)
    in_flight: int = 0
    cooldown: CooldownPolicy = field(default_factory=CooldownPolicy)
    rng: random.Random = field(default_factory=random.Random)

    def set_provider(
        self, name: str, max_concurrency: int, per_minute: int | None, now: float
    ) -> None:
        """Adds a provider, or changes the limits of one already counted (its calls in
        flight stay counted)."""
        budget = self.providers.get(name)
        if budget is None:
            bucket = TokenBucket(per_minute, now) if per_minute else None
            breaker = Breaker(self.cooldown, self.rng)
            self.providers[name] = ProviderBudget(max_concurrency, bucket, breaker)
            return
        budget.max_concurrency = max_concurrency
        if not per_minute:
            budget.bucket = None
        elif budget.bucket is None:
            budget.bucket = TokenBucket(per_minute, now)
        else:
            budget.bucket.retune(per_minute, now)

    def reconfigure(
        self, max_in_flight: int, limits: Mapping[str, ProviderLimitSpec], now: float
    ) -> None:
        """Applies a (re)loaded configuration.

        A lowered limit stops no running call; new calls wait until enough have ended. A
        provider the configuration no longer names keeps its last limits, so the calls
        already queued for it are still granted and drain (the reloaded providers fail
        them as not configured) instead of waiting for a slot that never comes.
        """
        self.max_in_flight = max_in_flight
        for name, spec in limits.items():
            self.set_provider(name, spec.max_concurrency, spec.requests_per_minute, now)

    def ready_at(self, provider: str, now: float) -> float | None:
        """When a call to `provider` may start: now, later (rate, cooldown), or None (a
        slot must be released, or the cooldown's probe answer, first)."""
        budget = self.providers[provider]
        if self.in_flight >= self.max_in_flight or budget.in_flight >= budget.max_concurrency:
            return None
        healthy_at = budget.breaker.ready_at(now)
        if healthy_at is None or healthy_at > now:
            return healthy_at  # the bucket is asked once the cooldown is over
        return now if budget.bucket is None else budget.bucket.ready_at(now)

    def start(self, provider: str, now: float) -> bool:
        """A call starts; True when it is the provider's half-open probe."""
        budget = self.providers[provider]
        self.in_flight += 1
        budget.in_flight += 1
        if budget.bucket is not None:
            budget.bucket.take(now)
        return budget.breaker.start(now)

    def record(
        self, provider: str, signal: Signal, retry_after: float | None, now: float, *, probe: bool
    ) -> str | None:
        """What a call's outcome says about the provider; the cause of a new cooldown."""
        return self.providers[provider].breaker.record(signal, retry_after, now, probe=probe)

    def finish(self, provider: str, *, probe: bool = False, recorded: bool = True) -> None:
        """A call's slot is released; a probe that recorded no outcome (cancelled) hands
        the probe to the next call."""
        self.in_flight -= 1
        budget = self.providers[provider]
        budget.in_flight -= 1
        if not recorded:
            budget.breaker.abandoned(probe)

    def cooling_down(self, provider: str, now: float) -> float | None:
        """Until when the provider's calls are held, or None when they are not."""
        breaker = self.providers[provider].breaker
        return breaker.until if breaker.cooling_down(now) else None

    def cooldown_cause(self, provider: str) -> str:
        """Why the provider's breaker last opened (cooldown.CAUSE_*)."""
        return self.providers[provider].breaker.cause
