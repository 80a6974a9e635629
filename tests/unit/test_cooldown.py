"""A provider's circuit breaker, by tables over an injected clock and random source."""

from __future__ import annotations

import random

import pytest

from asyncjobs.core.cooldown import (
    CAUSE_FAILING,
    CAUSE_THROTTLED,
    Breaker,
    CooldownPolicy,
    Signal,
    State,
    signal_of,
)
from asyncjobs.core.providers.base import ProviderError, ProviderResult

# No jitter unless a test asks for it, so every cooldown is exact.
EXACT = CooldownPolicy(failures_to_open=3, base_seconds=2.0, max_seconds=60.0, jitter=0.0)


def breaker(policy: CooldownPolicy = EXACT) -> Breaker:
    return Breaker(policy, random.Random(7))


def error(status: int | None, retryable: bool = True) -> ProviderError:
    return ProviderError("x", status_code=status, retryable=retryable)


@pytest.mark.parametrize(
    ("outcome", "signal"),
    [
        (ProviderResult({}), Signal.HEALTHY),
        (error(429), Signal.THROTTLED),
        (error(500), Signal.FAILING),
        (error(503), Signal.FAILING),
        (error(None), Signal.FAILING),  # timeout, connection refused
        (error(400, retryable=False), Signal.HEALTHY),  # the provider answered the request
        (error(401, retryable=False), Signal.HEALTHY),
        (error(None, retryable=False), Signal.HEALTHY),  # no longer configured
    ],
)
def test_what_an_outcome_says_about_the_provider(
    outcome: ProviderResult | ProviderError, signal: Signal
) -> None:
    assert signal_of(outcome) is signal


# Each event: (time, signal, Retry-After, probe?); then what ready_at says at `ask`.
Event = tuple[float, Signal, float | None, bool]
H, T, F = Signal.HEALTHY, Signal.THROTTLED, Signal.FAILING


@pytest.mark.parametrize(
    ("case", "events", "ask", "ready"),
    [
        ("closed: calls start at once", [(0, H, None, False)], 1.0, 1.0),
        ("a 429 holds calls for Retry-After", [(10, T, 30.0, False)], 11.0, 40.0),
        ("a 429 without Retry-After holds for the base", [(10, T, None, False)], 11.0, 12.0),
        ("a short Retry-After still waits the base", [(10, T, 0.5, False)], 10.0, 12.0),
        ("a Retry-After of hours is capped", [(10, T, 7200.0, False)], 11.0, 70.0),
        ("fewer failures than the threshold hold nothing", [(0, F, None, False)] * 2, 1.0, 1.0),
        (
            "a run of failures opens it",
            [(0, F, None, False), (1, F, None, False), (2, F, None, False)],
            2.5,
            4.0,
        ),
        (
            "a success in between resets the run",
            [(0, F, None, False), (1, F, None, False), (1.5, H, None, False), (2, F, None, False)],
            2.5,
            2.5,
        ),
        (
            "a call in flight when it opened lengthens it to its Retry-After",
            [(10, T, None, False), (11, T, 20.0, False)],
            12.0,
            31.0,
        ),
        (
            "a success of a call started earlier does not close it",
            [(10, T, 30.0, False), (11, H, None, False)],
            12.0,
            40.0,
        ),
        (
            "after the cooldown one probe may start",
            [(10, T, 5.0, False)],
            15.0,
            15.0,
        ),
        (
            "a failed probe opens it again for twice as long",
            [(10, T, None, False), (12, T, None, True)],
            13.0,
            16.0,
        ),
        (
            "a probe's success closes it and resets the backoff",
            [(10, T, None, False), (12, H, None, True), (13, T, None, False)],
            14.0,
            15.0,
        ),
    ],
)
def test_when_calls_may_start(case: str, events: list[Event], ask: float, ready: float) -> None:
    b = breaker()
    for now, signal, retry_after, probe in events:
        if probe:
            assert b.ready_at(now) == now, case
            assert b.start(now), case
        b.record(signal, retry_after, now, probe=probe)
    assert b.ready_at(ask) == ready, case


def test_while_the_probe_runs_nothing_else_starts_and_an_abandoned_probe_frees_its_place() -> None:
    b = breaker()
    assert b.record(T, None, 0.0, probe=False) == CAUSE_THROTTLED
    assert b.ready_at(1.0) == 2.0
    assert b.cooling_down(1.0)
    assert b.start(2.0) is True  # the probe
    assert b.ready_at(3.0) is None  # wait for its answer
    assert b.cooling_down(3.0)
    b.abandoned(probe=True)  # cancelled: no answer
    assert b.ready_at(3.0) == 3.0
    assert b.start(3.0) is True  # the next call probes instead
    b.record(H, None, 3.5, probe=True)
    assert b.state is State.CLOSED
    assert not b.cooling_down(3.5)
    assert b.start(4.0) is False


def test_a_long_storm_costs_one_probe_per_ever_longer_cooldown() -> None:
    b = breaker()
    now = 0.0
    b.record(T, 1.0, now, probe=False)
    cooldowns = []
    for _ in range(7):
        now = b.until
        assert b.start(now)
        opened_at = now
        assert b.record(T, 1.0, now, probe=True) == CAUSE_THROTTLED
        cooldowns.append(b.until - opened_at)
    assert cooldowns == [4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_failures_open_with_their_own_cause() -> None:
    b = breaker()
    causes = [b.record(F, None, float(i), probe=False) for i in range(3)]
    assert causes == [None, None, CAUSE_FAILING]
    assert b.cause == CAUSE_FAILING


def test_jitter_spreads_cooldowns_within_its_fraction() -> None:
    policy = CooldownPolicy(base_seconds=10.0, max_seconds=100.0, jitter=0.2)
    untils = set()
    for seed in range(50):
        b = Breaker(policy, random.Random(seed))
        b.record(T, 50.0, 0.0, probe=False)
        untils.add(b.until)
    assert len(untils) == 50
    assert all(50.0 <= until <= 60.0 for until in untils)
    capped = Breaker(policy, random.Random(1))
    capped.record(T, 9999.0, 0.0, probe=False)
    assert 100.0 <= capped.until <= 120.0
