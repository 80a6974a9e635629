"""The member Lease: the pure decision by table, and the Lease adapter against an in-memory
apiserver (optimistic concurrency included) with a fake clock, so no test waits."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from asyncjobs.controller.member_lease import (
    MEMBER_LABEL,
    Action,
    LeaseRecord,
    MemberLease,
    MemberOnly,
    Sighting,
    Timing,
    claim,
    decide,
    leases_path,
    member_lease_name,
    micro_time,
    observe,
)
from asyncjobs.core.kube import KubeError, KubeObject

TIMING = Timing()  # 15 s lease, 10 s renew deadline, 2 s retry period
ME, EARLIER = "pod-1/aaaa", "pod-1/bbbb"
T0 = datetime(2026, 11, 30, 18, 0, 0, 123456, tzinfo=UTC)


def held_by(holder: str, duration: int = 15) -> LeaseRecord:
    return LeaseRecord(holder, duration, "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("seen", "now", "renewed_at", "expected"),
    [
        pytest.param(None, 100.0, None, Action.WAIT, id="nothing-read-yet"),
        pytest.param(Sighting(None, 100.0), 100.0, None, Action.CREATE, id="no-lease"),
        pytest.param(Sighting(held_by(ME), 100.0), 100.0, None, Action.RENEW, id="ours"),
        pytest.param(Sighting(held_by(ME), 100.0), 109.9, 100.0, Action.RENEW, id="renew"),
        # An earlier process of this pod (a restarted container): taken at once.
        pytest.param(Sighting(held_by(EARLIER), 100.0), 100.0, None, Action.ACQUIRE, id="earlier"),
        pytest.param(Sighting(held_by(""), 100.0), 100.0, None, Action.ACQUIRE, id="released"),
        pytest.param(Sighting(held_by(ME), 100.0), 110.0, 100.0, Action.LOST, id="deadline"),
        pytest.param(Sighting(held_by(EARLIER), 100.0), 101.0, 100.0, Action.LOST, id="taken"),
        pytest.param(Sighting(held_by(""), 100.0), 101.0, 100.0, Action.LOST, id="cleared"),
        pytest.param(Sighting(None, 100.0), 101.0, 100.0, Action.LOST, id="deleted"),
    ],
)
def test_decide(
    seen: Sighting | None, now: float, renewed_at: float | None, expected: Action
) -> None:
    assert decide(seen, now, ME, TIMING, renewed_at) is expected


def test_a_sighting_keeps_the_time_the_record_last_changed() -> None:
    # The holder's renewTime is another machine's clock: never read. Only a change counts.
    first = observe(None, held_by(EARLIER), "7", now=100.0)
    again = observe(first, held_by(EARLIER), "7", now=110.0)
    assert again.since == 100.0
    renewed = LeaseRecord(EARLIER, 15, "2026-01-01T00:00:00.000000Z", "2020-01-01T00:00:00Z")
    moved = observe(again, renewed, "8", now=114.0)
    assert moved.since == 114.0
    # A write that left the spec as it was (a holder's stuck clock) still counts.
    assert observe(moved, renewed, "9", now=120.0).since == 120.0
    assert observe(moved, None, "", now=120.0) == Sighting(None, 120.0)


def test_claim_takes_over_with_a_transition_and_renews_without_one() -> None:
    created = claim(None, ME, 15, T0)
    assert created == LeaseRecord(ME, 15, micro_time(T0), micro_time(T0), 0)
    assert micro_time(T0) == "2026-11-30T18:00:00.123456Z"
    taken = claim(replace(held_by(EARLIER), transitions=4), ME, 15, T0)
    assert (taken.holder, taken.transitions, taken.acquire_time) == (ME, 5, micro_time(T0))
    later = datetime(2026, 11, 30, 18, 0, 2, tzinfo=UTC)
    renewed = claim(taken, ME, 15, later)
    assert renewed.acquire_time == micro_time(T0)
    assert renewed.renew_time == "2026-11-30T18:00:02.000000Z"
    assert renewed.transitions == 5


@pytest.mark.parametrize(
    ("identity", "name"),
    [
        ("asyncjobs-operator-7d9f-x2k4p", "asyncjobs-operator-asyncjobs-operator-7d9f-x2k4p"),
        ("My_Host-123", "asyncjobs-operator-my-host-123"),
        ("a" * 300, "asyncjobs-operator-" + "a" * 234),
    ],
)
def test_member_lease_names_are_dns_subdomains(identity: str, name: str) -> None:
    assert member_lease_name("asyncjobs-operator", identity) == name


def test_timing_scales_client_go_defaults_and_rejects_inconsistent_values() -> None:
    assert Timing.for_duration(15) == Timing(15, 10, 2)
    with pytest.raises(ValueError, match="renew deadline"):
        Timing(lease_duration=10, renew_deadline=10, retry_period=2)


class Clock:
    """Monotonic time that only moves when a MemberLease sleeps."""

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
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Any = None,
        timeout: float = 30,
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
        if method == "GET" and path == collection:
            return {"items": [copy.deepcopy(o) for o in self.objects.values()]}
        name = path.removeprefix(collection + "/")
        if method == "DELETE":
            current = self.objects.get(name)
            if current is None:
                raise KubeError(404, "NotFound", name)
            wanted = ((body or {}).get("preconditions") or {}).get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise KubeError(409, "Conflict", "the object has been modified")
            del self.objects[name]
            return {}
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


def member(
    leases: FakeLeases, clock: Clock, holder: str, changes: list[bool] | None = None
) -> MemberLease:
    return MemberLease(
        leases,
        leases.namespace,
        "lease",
        holder,
        TIMING,
        clock=clock,
        wall=lambda: T0,
        sleep=clock.sleep,
        on_change=(changes if changes is not None else []).append,
    )


async def test_joining_creates_the_labelled_lease_and_leaving_deletes_it() -> None:
    leases, clock = FakeLeases(), Clock()
    changes: list[bool] = []
    a = member(leases, clock, ME, changes)
    await a.join()
    assert leases.spec() == {
        "holderIdentity": ME,
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-11-30T18:00:00.123456Z",
        "renewTime": "2026-11-30T18:00:00.123456Z",
        "leaseTransitions": 0,
    }
    assert leases.objects["lease"]["metadata"]["labels"][MEMBER_LABEL] == "true"
    for _ in range(5):
        await clock.sleep(2)
        assert await a.step() is Action.RENEW
    await a.leave()
    assert not a.holding
    assert changes == [True, False]
    assert leases.objects == {}


async def test_leaving_does_not_delete_a_lease_written_since() -> None:
    leases, clock = FakeLeases(), Clock()
    a = member(leases, clock, ME)
    await a.join()
    lease = leases.objects["lease"]
    leases._store("lease", {**lease, "spec": {**lease["spec"], "holderIdentity": EARLIER}})
    await a.leave()
    assert leases.spec()["holderIdentity"] == EARLIER


async def test_a_member_gives_up_when_renewals_fail_for_the_renew_deadline() -> None:
    leases, clock = FakeLeases(), Clock()
    changes: list[bool] = []
    a = member(leases, clock, ME, changes)
    await a.join()
    last_renewal = clock.now
    leases.failing = 1000  # the apiserver stops answering
    await asyncio.wait_for(a.hold(), timeout=5)
    assert not a.holding
    assert changes == [True, False]
    # It stopped at the deadline, before any other replica judges it gone (15 s).
    assert TIMING.renew_deadline <= clock.now - last_renewal < TIMING.lease_duration


async def test_a_member_survives_a_few_failed_renewals() -> None:
    leases, clock = FakeLeases(), Clock()
    a = member(leases, clock, ME)
    await a.join()
    leases.failing = 4  # fast path and fallback read fail in two rounds (~4 s)
    for _ in range(4):
        await clock.sleep(2)
        await a.step()
    assert a.holding


@pytest.mark.parametrize("change", ["taken", "deleted"])
async def test_a_member_whose_lease_was_taken_or_deleted_has_lost_it(change: str) -> None:
    leases, clock = FakeLeases(), Clock()
    a = member(leases, clock, ME)
    await a.join()
    lease = leases.objects["lease"]
    if change == "taken":
        leases._store("lease", {**lease, "spec": {**lease["spec"], "holderIdentity": EARLIER}})
    else:
        del leases.objects["lease"]
    assert await a.step() is Action.LOST
    assert not a.holding


async def test_a_restarted_process_of_the_same_member_takes_its_lease_at_once() -> None:
    leases, clock = FakeLeases(), Clock()
    old = member(leases, clock, EARLIER)
    await old.join()
    for _ in range(3):
        await clock.sleep(2)
        await old.step()
    started = clock.now
    await member(leases, clock, ME).join()  # the container restarted: a new holder
    assert clock.now == started
    assert leases.spec()["holderIdentity"] == ME
    assert leases.spec()["leaseTransitions"] == 1


async def test_two_processes_racing_for_one_lease_cannot_both_win() -> None:
    leases, clock = FakeLeases(), Clock()
    outcomes = await asyncio.gather(
        member(leases, clock, ME).step(), member(leases, clock, EARLIER).step()
    )
    assert sorted(o.value for o in outcomes) == ["create", "wait"]


async def test_renewing_member_writes_once_per_round_without_reading() -> None:
    leases, clock = FakeLeases(), Clock()
    a = member(leases, clock, ME)
    await a.join()
    leases.calls.clear()
    for _ in range(5):
        await clock.sleep(2)
        assert await a.step() is Action.RENEW
    assert leases.calls == ["PUT"] * 5


async def test_events_reach_the_supervisor_only_while_holding_and_until_closed() -> None:
    leases, clock = FakeLeases(), Clock()
    seen: list[str | None] = []

    class Recorder:
        def observe(self, event_type: str | None, obj: dict[str, Any]) -> None:
            seen.append(event_type)

    a = member(leases, clock, ME)
    gate = MemberOnly(Recorder(), a)
    gate.observe("ADDED", {})
    await a.join()
    gate.observe("MODIFIED", {})
    gate.close()
    gate.observe("DELETED", {})
    assert seen == ["MODIFIED"]
