"""Leader election: the pure decision by table, and the Lease adapter against an in-memory
apiserver (optimistic concurrency included) with a fake clock, so no test waits."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from asyncjobs.controller.leadership import (
    Action,
    LeaderOnly,
    Leadership,
    LeaseRecord,
    Sighting,
    Timing,
    claim,
    decide,
    leases_path,
    micro_time,
    observe,
    released,
)
from asyncjobs.core.kube import KubeError, KubeObject

TIMING = Timing()  # 15 s lease, 10 s renew deadline, 2 s retry period
ME, OTHER = "me", "other"
T0 = datetime(2026, 11, 30, 18, 0, 0, 123456, tzinfo=UTC)


def held_by(holder: str, duration: int = 15) -> LeaseRecord:
    return LeaseRecord(holder, duration, "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("seen", "now", "renewed_at", "expected"),
    [
        pytest.param(None, 100.0, None, Action.WAIT, id="nothing-read-yet"),
        pytest.param(Sighting(None, 100.0), 100.0, None, Action.CREATE, id="no-lease"),
        pytest.param(Sighting(held_by(ME), 100.0), 100.0, None, Action.RENEW, id="own-name"),
        pytest.param(Sighting(held_by(ME), 100.0), 109.9, 100.0, Action.RENEW, id="renew"),
        pytest.param(Sighting(held_by(OTHER), 100.0), 114.9, None, Action.WAIT, id="held"),
        pytest.param(Sighting(held_by(OTHER), 100.0), 115.0, None, Action.ACQUIRE, id="ran-out"),
        pytest.param(
            Sighting(held_by(OTHER, duration=30), 100.0), 120.0, None, Action.WAIT, id="its-own-30s"
        ),
        pytest.param(
            Sighting(held_by(OTHER, duration=0), 100.0), 115.0, None, Action.ACQUIRE, id="no-dur"
        ),
        pytest.param(Sighting(held_by(""), 100.0), 100.0, None, Action.ACQUIRE, id="released"),
        pytest.param(Sighting(held_by(ME), 100.0), 110.0, 100.0, Action.LOST, id="deadline"),
        pytest.param(Sighting(held_by(OTHER), 100.0), 101.0, 100.0, Action.LOST, id="taken"),
        pytest.param(Sighting(held_by(""), 100.0), 101.0, 100.0, Action.LOST, id="cleared"),
        pytest.param(Sighting(None, 100.0), 101.0, 100.0, Action.LOST, id="deleted"),
    ],
)
def test_decide(
    seen: Sighting | None, now: float, renewed_at: float | None, expected: Action
) -> None:
    assert decide(seen, now, ME, TIMING, renewed_at) is expected


def test_expiry_counts_from_when_this_process_saw_the_record_change() -> None:
    # The holder's renewTime is another machine's clock: never read. Only a change counts.
    first = observe(None, held_by(OTHER), "7", now=100.0)
    again = observe(first, held_by(OTHER), "7", now=110.0)
    assert again.since == 100.0
    assert decide(again, 115.0, ME, TIMING, None) is Action.ACQUIRE
    renewed = LeaseRecord(OTHER, 15, "2026-01-01T00:00:00.000000Z", "2020-01-01T00:00:00Z")
    moved = observe(again, renewed, "8", now=114.0)
    assert moved.since == 114.0
    assert decide(moved, 128.9, ME, TIMING, None) is Action.WAIT
    # A write that left the spec as it was (a holder's stuck clock) still counts.
    assert observe(moved, renewed, "9", now=120.0).since == 120.0
    assert observe(moved, None, "", now=120.0) == Sighting(None, 120.0)


def test_claim_takes_over_with_a_transition_and_renews_without_one() -> None:
    created = claim(None, ME, 15, T0)
    assert created == LeaseRecord(ME, 15, micro_time(T0), micro_time(T0), 0)
    assert micro_time(T0) == "2026-11-30T18:00:00.123456Z"
    taken = claim(replace(held_by(OTHER), transitions=4), ME, 15, T0)
    assert (taken.holder, taken.transitions, taken.acquire_time) == (ME, 5, micro_time(T0))
    later = datetime(2026, 11, 30, 18, 0, 2, tzinfo=UTC)
    renewed = claim(taken, ME, 15, later)
    assert renewed.acquire_time == micro_time(T0)
    assert renewed.renew_time == "2026-11-30T18:00:02.000000Z"
    assert renewed.transitions == 5
    free = released(renewed, later)
    assert (free.holder, free.duration_seconds, free.transitions) == ("", 1, 5)
    assert "holderIdentity" not in free.spec()


def test_timing_scales_client_go_defaults_and_rejects_inconsistent_values() -> None:
    assert Timing.for_duration(15) == Timing(15, 10, 2)
    with pytest.raises(ValueError, match="renew deadline"):
        Timing(lease_duration=10, renew_deadline=10, retry_period=2)


class Clock:
    """Monotonic time that only moves when a Leadership sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class FakeLeases:
    """The Lease endpoints of an apiserver: create, get, and update that refuses a stale
    resourceVersion (409), as the real one does."""

    def __init__(self, namespace: str = "jobs") -> None:
        self.namespace = namespace
        self.objects: dict[str, KubeObject] = {}
        self.version = 0
        self.calls: list[str] = []
        self.failing = 0

    async def request(
        self, method: str, path: str, *, body: Any = None, timeout: float = 30
    ) -> KubeObject:
        self.calls.append(method)
        await asyncio.sleep(0)  # let a concurrent candidate interleave, as over a network
        if self.failing:
            self.failing -= 1
            raise KubeError(0, "Unreachable", "TimeoutError")
        collection = leases_path(self.namespace)
        if method == "POST" and path == collection:
            name = body["metadata"]["name"]
            if name in self.objects:
                raise KubeError(409, "AlreadyExists", name)
            return self._store(name, body)
        name = path.removeprefix(collection + "/")
        if method == "GET":
            if name not in self.objects:
                raise KubeError(404, "NotFound", name)
            return copy.deepcopy(self.objects[name])
        if method == "PUT":
            current = self.objects.get(name)
            if current is None:
                raise KubeError(404, "NotFound", name)
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                raise KubeError(409, "Conflict", "the object has been modified")
            return self._store(name, body)
        raise AssertionError(f"unexpected {method} {path}")

    def _store(self, name: str, body: KubeObject) -> KubeObject:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.objects[name] = stored
        return copy.deepcopy(stored)

    def spec(self, name: str = "lease") -> dict[str, Any]:
        spec: dict[str, Any] = self.objects[name]["spec"]
        return spec


def candidate(
    leases: FakeLeases, clock: Clock, identity: str, changes: list[bool] | None = None
) -> Leadership:
    return Leadership(
        leases,
        leases.namespace,
        "lease",
        identity,
        TIMING,
        clock=clock,
        wall=lambda: T0,
        sleep=clock.sleep,
        on_change=(changes if changes is not None else []).append,
    )


async def test_standby_waits_while_the_holder_renews_and_takes_over_when_it_stops() -> None:
    leases, clock = FakeLeases(), Clock()
    a, b = candidate(leases, clock, "a"), candidate(leases, clock, "b")
    assert await a.step() is Action.CREATE
    assert leases.spec() == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-11-30T18:00:00.123456Z",
        "renewTime": "2026-11-30T18:00:00.123456Z",
        "leaseTransitions": 0,
    }
    assert await b.step() is Action.WAIT
    assert b.holder == "a"
    for _ in range(20):  # 40 s of renewals every 2 s: b never gets it
        await clock.sleep(2)
        assert await a.step() is Action.RENEW
        assert await b.step() is Action.WAIT
    started = clock.now  # a stops renewing (killed)
    await b.acquire()
    assert 15 <= clock.now - started <= 15 + TIMING.retry_period
    assert b.leading
    assert leases.spec()["holderIdentity"] == "b"
    assert leases.spec()["leaseTransitions"] == 1


async def test_a_released_lease_is_taken_at_the_next_try() -> None:
    leases, clock = FakeLeases(), Clock()
    changes: list[bool] = []
    a, b = candidate(leases, clock, "a", changes), candidate(leases, clock, "b")
    await a.acquire()
    assert await b.step() is Action.WAIT
    await a.release()
    assert not a.leading
    assert changes == [True, False]
    assert "holderIdentity" not in leases.spec()
    assert leases.spec()["leaseDurationSeconds"] == 1
    assert await b.step() is Action.ACQUIRE
    assert b.leading


async def test_two_candidates_racing_for_a_free_lease_cannot_both_win() -> None:
    leases, clock = FakeLeases(), Clock()
    a, b, c = (candidate(leases, clock, n) for n in "abc")
    await a.acquire()
    await a.release()
    # b and c read the same version; only one conditional write can land.
    outcomes = await asyncio.gather(b.step(), c.step())
    assert sorted(o.value for o in outcomes) == ["acquire", "wait"]
    assert [b.leading, c.leading].count(True) == 1
    both_created = await asyncio.gather(*(candidate(FakeLeases(), clock, n).step() for n in "xy"))
    assert Action.CREATE in both_created


async def test_leader_gives_up_when_renewals_fail_for_the_renew_deadline() -> None:
    leases, clock = FakeLeases(), Clock()
    changes: list[bool] = []
    a = candidate(leases, clock, "a", changes)
    await a.acquire()
    last_renewal = clock.now
    leases.failing = 1000  # the apiserver stops answering
    await asyncio.wait_for(a.hold(), timeout=5)
    assert not a.leading
    assert changes == [True, False]
    # It stopped at the deadline, before any standby could take over (15 s).
    assert TIMING.renew_deadline <= clock.now - last_renewal < TIMING.lease_duration


async def test_leader_survives_a_few_failed_renewals() -> None:
    leases, clock = FakeLeases(), Clock()
    a = candidate(leases, clock, "a")
    await a.acquire()
    leases.failing = 4  # fast path and fallback read fail in two rounds (~4 s)
    for _ in range(4):
        await clock.sleep(2)
        await a.step()
    assert a.leading


async def test_leader_that_finds_another_name_on_the_lease_has_lost_it() -> None:
    leases, clock = FakeLeases(), Clock()
    a, b = candidate(leases, clock, "a"), candidate(leases, clock, "b")
    await a.acquire()
    lease = leases.objects["lease"]
    leases._store("lease", {**lease, "spec": {**lease["spec"], "holderIdentity": "b"}})
    assert await a.step() is Action.LOST
    assert not a.leading
    assert await b.step() is Action.RENEW


async def test_a_restarted_process_with_the_same_identity_takes_its_lease_at_once() -> None:
    leases, clock = FakeLeases(), Clock()
    old = candidate(leases, clock, "pod-1")
    await old.acquire()
    for _ in range(3):
        await clock.sleep(2)
        await old.step()
    started = clock.now
    await candidate(leases, clock, "pod-1").acquire()  # the container restarted
    assert clock.now == started
    assert leases.spec()["leaseTransitions"] == 0
    assert leases.spec()["acquireTime"] == micro_time(T0)


async def test_renewing_leader_writes_once_per_round_without_reading() -> None:
    leases, clock = FakeLeases(), Clock()
    a = candidate(leases, clock, "a")
    await a.acquire()
    leases.calls.clear()
    for _ in range(5):
        await clock.sleep(2)
        assert await a.step() is Action.RENEW
    assert leases.calls == ["PUT"] * 5


async def test_events_reach_the_supervisor_only_while_leading_and_until_closed() -> None:
    leases, clock = FakeLeases(), Clock()
    seen: list[str | None] = []

    class Recorder:
        def observe(self, event_type: str | None, obj: dict[str, Any]) -> None:
            seen.append(event_type)

    a = candidate(leases, clock, "a")
    gate = LeaderOnly(Recorder(), a)
    gate.observe("ADDED", {})
    await a.acquire()
    gate.observe("MODIFIED", {})
    gate.close()
    gate.observe("DELETED", {})
    assert seen == ["MODIFIED"]
