"""Call limits changed at run time (a reloaded providers file): tables over an injected
clock, so time passes without sleeping."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from asyncjobs.core.limits import CallBudget, TokenBucket


@dataclass(frozen=True)
class Limit:
    max_concurrency: int
    requests_per_minute: int | None = None


@pytest.mark.parametrize(
    ("before", "taken", "elapsed", "after", "ready_at"),
    [
        # 60/min holds one token; taken at 0, retuned to 120/min at 0.5 s: the half token
        # earned so far is kept and fills at 2/s, so the next one is due at 0.75 s.
        (60, 1, 0.5, 120, 0.75),
        # Slowing down keeps what was earned: half a token, then 30/min (0.5/s) -> +1 s.
        (60, 1, 0.5, 30, 1.5),
        # A bucket that is full stays usable at once at the new rate.
        (60, 0, 0.0, 6, 0.0),
        # 600/min holds ten tokens; after ten calls, a drop to 60/min caps capacity at
        # one and the empty bucket refills at 1/s: no burst of ten comes back.
        (600, 10, 0.0, 60, 1.0),
    ],
)
def test_a_retuned_bucket_keeps_the_tokens_earned_and_never_refills_at_once(
    before: int, taken: int, elapsed: float, after: int, ready_at: float
) -> None:
    bucket = TokenBucket(before, now=0.0)
    for _ in range(taken):
        bucket.take(0.0)
    bucket.retune(after, now=elapsed)
    assert bucket.ready_at(elapsed) == pytest.approx(ready_at)


def budget_with_calls(calls: dict[str, int]) -> CallBudget:
    """Providers a and b, 2 calls each at most, 4 in all, with `calls` in flight."""
    budget = CallBudget(max_in_flight=4)
    budget.reconfigure(4, {"a": Limit(2), "b": Limit(2)}, now=0.0)
    for name, count in calls.items():
        for _ in range(count):
            budget.start(name, 0.0)
    return budget


@pytest.mark.parametrize(
    ("calls", "max_in_flight", "limits", "ready"),
    [
        # a is full (2 of 2); raising its limit lets a third call start.
        ({"a": 2}, 4, {"a": Limit(3), "b": Limit(2)}, {"a": True, "b": True}),
        # Lowering below the calls in flight stops new calls, not the running ones.
        ({"a": 2}, 4, {"a": Limit(1), "b": Limit(2)}, {"a": False, "b": True}),
        # The global limit applies to every provider at once.
        ({"a": 1, "b": 1}, 2, {"a": Limit(2), "b": Limit(2)}, {"a": False, "b": False}),
        ({"a": 2, "b": 2}, 5, {"a": Limit(3), "b": Limit(3)}, {"a": True, "b": True}),
        # A provider added by a reload can be called at once.
        ({"a": 2}, 4, {"a": Limit(2), "c": Limit(1)}, {"a": False, "b": True, "c": True}),
        # A provider dropped from the file keeps its last limits so its queue drains.
        ({"b": 1}, 4, {"a": Limit(2)}, {"a": True, "b": True}),
        # A rate limit added by a reload starts full: one call now, not a burst.
        ({}, 4, {"a": Limit(2, 60), "b": Limit(2)}, {"a": True, "b": True}),
    ],
)
def test_reconfigured_limits_apply_to_the_calls_already_in_flight(
    calls: dict[str, int],
    max_in_flight: int,
    limits: dict[str, Limit],
    ready: dict[str, bool],
) -> None:
    budget = budget_with_calls(calls)
    budget.reconfigure(max_in_flight, limits, now=1.0)
    assert {name: budget.ready_at(name, 1.0) == 1.0 for name in ready} == ready
    assert budget.in_flight == sum(calls.values())
    for name, count in calls.items():
        assert budget.providers[name].in_flight == count


def test_removing_a_rate_limit_frees_a_provider_waiting_for_tokens() -> None:
    budget = CallBudget(max_in_flight=4)
    budget.reconfigure(4, {"a": Limit(4, 60)}, now=0.0)
    budget.start("a", 0.0)
    budget.finish("a")
    assert budget.ready_at("a", 0.1) == pytest.approx(1.0)  # the one token is spent
    budget.reconfigure(4, {"a": Limit(4)}, now=0.1)
    assert budget.ready_at("a", 0.1) == 0.1


def test_calls_that_started_before_a_reload_finish_against_the_new_budget() -> None:
    budget = budget_with_calls({"a": 2})
    budget.reconfigure(1, {"a": Limit(1)}, now=1.0)
    budget.finish("a")
    assert budget.ready_at("a", 1.0) is None  # one call still runs: the limit is 1
    budget.finish("a")
    assert budget.ready_at("a", 1.0) == 1.0
    assert budget.in_flight == 0
