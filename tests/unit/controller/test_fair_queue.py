"""The fair queue alone: who gets the next slot, with no clock and no event loop."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from asyncjobs.controller.fair_queue import FairQueue


@dataclass
class Waiter:
    name: str
    alive: bool = True


def queue() -> FairQueue[Waiter]:
    return FairQueue(lambda w: w.alive)


def drain(q: FairQueue[Waiter], ready: set[str] | None = None, limit: int = 10_000) -> list[str]:
    served = []
    for _ in range(limit):
        chosen = q.pop(ready if ready is not None else {"p"})
        if chosen is None:
            break
        served.append(chosen[1].name)
    return served


def test_a_single_job_of_another_key_is_served_next_despite_a_backlog() -> None:
    q = queue()
    for i in range(10_000):
        q.push("flood", 1, "p", (0, float(i)), Waiter(f"a{i}"))
    assert drain(q, limit=3) == ["a0", "a1", "a2"]
    q.push("trickle", 1, "p", (0, 1e9), Waiter("b0"))  # newer than the whole backlog
    assert drain(q, limit=1) == ["b0"]


def test_groups_alternate_when_both_have_backlogs() -> None:
    q = queue()
    for i in range(4):
        q.push("a", 1, "p", (0, float(i)), Waiter(f"a{i}"))
    for i in range(4):
        q.push("b", 1, "p", (0, 100.0 + i), Waiter(f"b{i}"))
    assert drain(q) == ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3"]


def test_service_follows_the_weights() -> None:
    q = queue()
    for i in range(400):
        q.push("heavy", 3, "p", (0, float(i)), Waiter(f"h{i}"))
        q.push("light", 1, "p", (0, float(i)), Waiter(f"l{i}"))
    first = drain(q, limit=200)
    counts = Counter(name[0] for name in first)
    assert counts == {"h": 150, "l": 50}


def test_without_groups_the_oldest_goes_first() -> None:
    q = queue()
    for i in (5, 3, 4, 1, 2):
        q.push("", 1, "p", (0, float(i)), Waiter(f"j{i}"))
    assert drain(q) == ["j1", "j2", "j3", "j4", "j5"]


def test_priority_orders_within_a_group_but_not_across_groups() -> None:
    q = queue()
    # Orders as the executor builds them: (-priority, submitted).
    q.push("a", 1, "p", (0, 1.0), Waiter("a-normal-old"))
    q.push("a", 1, "p", (-5, 2.0), Waiter("a-high-new"))
    q.push("a", 1, "p", (3, 0.0), Waiter("a-low-oldest"))
    q.push("b", 1, "p", (9, 3.0), Waiter("b-lowest"))
    assert drain(q) == ["a-high-new", "b-lowest", "a-normal-old", "a-low-oldest"]


def test_an_idle_group_earns_no_credit_for_its_idle_time() -> None:
    q = queue()
    for i in range(100):
        q.push("a", 1, "p", (0, float(i)), Waiter(f"a{i}"))
    drain(q, limit=50)
    # b arrives with a backlog of its own after a served 50: it shares from now on,
    # rather than being owed the 50 it never asked for.
    for i in range(10):
        q.push("b", 1, "p", (0, float(i)), Waiter(f"b{i}"))
    nxt = drain(q, limit=10)
    assert Counter(name[0] for name in nxt) == {"a": 5, "b": 5}


def test_a_group_cannot_gain_by_leaving_and_coming_back() -> None:
    q = queue()
    for i in range(10):
        q.push("a", 1, "p", (0, float(i)), Waiter(f"a{i}"))
    served = []
    # b submits one job, is served, then another as soon as it is: each time it joins at
    # the virtual time, so it alternates with a, never runs twice in a row.
    for i in range(5):
        q.push("b", 1, "p", (0, float(i)), Waiter(f"b{i}"))
        served += drain(q, limit=2)
    assert served == [x for i in range(5) for x in (f"a{i}", f"b{i}")]


def test_a_blocked_lane_does_not_hold_up_other_lanes_nor_cost_its_group() -> None:
    q = queue()
    q.push("a", 1, "slow", (0, 0.0), Waiter("a-slow"))
    q.push("b", 1, "fast", (0, 1.0), Waiter("b-fast"))
    q.push("b", 1, "fast", (0, 2.0), Waiter("b-fast2"))
    assert drain(q, ready={"fast"}) == ["b-fast", "b-fast2"]
    assert q.lanes_waiting() == {"slow"}
    assert drain(q, ready={"slow", "fast"}) == ["a-slow"]


def test_within_a_group_the_best_ready_lane_goes_first() -> None:
    q = queue()
    q.push("a", 1, "x", (0, 2.0), Waiter("x2"))
    q.push("a", 1, "y", (0, 1.0), Waiter("y1"))
    q.push("a", 1, "x", (0, 0.0), Waiter("x0"))
    assert drain(q, ready={"x", "y"}) == ["x0", "y1", "x2"]


def test_dead_waiters_are_skipped_and_not_counted() -> None:
    q = queue()
    gone = Waiter("gone")
    q.push("a", 1, "p", (0, 0.0), gone)
    q.push("a", 1, "p", (0, 1.0), Waiter("kept"))
    q.push("b", 1, "p", (0, 2.0), Waiter("b"))
    gone.alive = False
    assert q.waiting_by_group() == {"a": 1, "b": 1}
    assert drain(q) == ["kept", "b"]
    assert q.waiting_by_group() == {}
    assert q.lanes_waiting() == set()
    assert list(q.items()) == []
