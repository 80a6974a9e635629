"""The live members and this replica's share: liveness by this process's clock, the
resume rule, and the Members adapter over an in-memory Lease store."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from asyncjobs.controller.member_lease import LeaseRecord, MemberLease, Sighting, Timing
from asyncjobs.controller.member_metrics import register_member_metrics
from asyncjobs.controller.members import (
    Members,
    Ownership,
    changed_no_earlier_than,
    live_members,
    seconds_to_next_expiry,
    stale_leases,
    wait_for_single_leader,
)
from asyncjobs.controller.shard_labels import to_label
from asyncjobs.core import shards
from tests.unit.controller.test_member_lease import T0, Clock, FakeLeases

TIMING = Timing()


def seen(holder: str, since: float, duration: int = 15, version: str = "1") -> Sighting:
    return Sighting(LeaseRecord(holder, duration), since, version)


@pytest.mark.parametrize(
    ("sightings", "now", "expected"),
    [
        pytest.param({}, 100.0, {}, id="none"),
        pytest.param({"a": seen("a/1", 100.0)}, 114.9, {"a": "a/1"}, id="live"),
        pytest.param({"a": seen("a/1", 100.0)}, 115.0, {}, id="ran-out"),
        pytest.param({"a": seen("a/1", 100.0, duration=30)}, 120.0, {"a": "a/1"}, id="own-30s"),
        pytest.param({"a": seen("a/1", 100.0, duration=0)}, 115.0, {}, id="no-duration"),
        pytest.param({"a": seen("", 100.0)}, 100.0, {}, id="no-holder"),
        pytest.param({"a": Sighting(None, 100.0)}, 100.0, {}, id="absent"),
        pytest.param(
            {"a": seen("a/1", 100.0), "b": seen("b/1", 90.0)}, 106.0, {"a": "a/1"}, id="one-of-two"
        ),
    ],
)
def test_live_members(sightings: dict[str, Sighting], now: float, expected: dict[str, str]) -> None:
    assert live_members(sightings, now, TIMING.lease_duration) == expected


def test_stale_leases_are_other_members_unchanged_for_four_durations() -> None:
    sightings = {
        "me": seen("me/1", 0.0),
        "a": seen("a/1", 0.0, version="7"),
        "b": seen("b/1", 50.0),
    }
    assert stale_leases(sightings, 59.9, 15, "me") == []
    assert stale_leases(sightings, 60.0, 15, "me") == [("a", "7")]


@pytest.mark.parametrize(
    ("claimer", "expected"),
    [
        pytest.param("", True, id="no-claimer-recorded"),
        pytest.param("me/1", True, id="this-process"),
        pytest.param("me/0", True, id="an-earlier-process-of-this-member"),
        pytest.param("b/1", False, id="another-live-member"),
        pytest.param("b/0", True, id="an-earlier-process-of-a-live-member"),
        pytest.param("c/1", True, id="a-gone-member"),
    ],
)
def test_may_resume(claimer: str, expected: bool) -> None:
    ownership = Ownership("me", "me/1", {"me": "me/1", "b": "b/1"})
    assert ownership.may_resume(claimer) is expected


def test_ownership_alone_owns_every_shard() -> None:
    assert Ownership.alone().shards == frozenset(range(shards.SHARDS))
    two = Ownership("me", "me/1", {"me": "me/1", "b": "b/1"})
    assert two.shards == shards.owned_shards("me", ["me", "b"])
    assert 0 < len(two.shards) < shards.SHARDS


def test_only_owned_unlabelled_jobs_are_labelled_with_their_hash() -> None:
    two = Ownership("me", "me/1", {"me": "me/1", "b": "b/1"})
    names = [f"job-{i}" for i in range(40)]
    wanted = to_label(names, two)
    assert wanted
    assert all(two.owns(int(value)) for value in wanted.values())
    assert all(value == str(shards.shard_of(name)) for name, value in wanted.items())
    others = to_label(names, Ownership("b", "b/1", {"me": "me/1", "b": "b/1"}))
    assert sorted([*wanted, *others]) == sorted(names)


async def test_members_follow_joins_deaths_and_clean_leaves_by_their_own_clock() -> None:
    leases, clock = FakeLeases(), Clock()

    def lease(name: str, holder: str) -> MemberLease:
        return MemberLease(
            leases, leases.namespace, name, holder, TIMING, clock=clock, wall=lambda: T0
        )

    a, b = lease("a", "a/1"), lease("b", "b/1")
    await a.join()
    view = Members(leases, leases.namespace, "a", "a/1", TIMING, clock=clock)
    assert await view.refresh()
    assert view.snapshot().members == {"a": "a/1"}
    await b.join()
    await view.refresh()
    assert view.changed.is_set()
    assert view.snapshot().members == {"a": "a/1", "b": "b/1"}
    # b stops renewing (killed): it counts until 15 s after a last saw its lease change.
    killed = clock.now
    while clock.now + 1 < killed + 15:
        await clock.sleep(1)
        await a.step()
        await view.refresh()
        assert "b" in view.live()
    await clock.sleep(killed + 15 - clock.now)
    await view.refresh()
    assert view.live() == {"a": "a/1"}
    assert view.changed.is_set()
    # A restarted b (a new process) counts again at once, under its new holder.
    b2 = lease("b", "b/2")
    await b2.join()
    await view.refresh()
    assert view.snapshot().members == {"a": "a/1", "b": "b/2"}
    await b2.leave()
    await view.refresh()
    assert view.snapshot().members == {"a": "a/1"}


async def test_a_first_sighting_counts_as_live_for_a_whole_duration() -> None:
    # A replica that starts cannot know how long ago another one last renewed.
    leases, clock = FakeLeases(), Clock()
    old = MemberLease(leases, leases.namespace, "old", "old/1", TIMING, clock=clock)
    await old.join()
    await clock.sleep(14)  # old was killed 14 s ago
    view = Members(leases, leases.namespace, "new", "new/1", TIMING, clock=clock)
    await view.refresh()
    assert "old" in view.live()
    await clock.sleep(14.9)
    await view.refresh()
    assert "old" in view.live()
    await clock.sleep(0.1)
    assert "old" in view.live(), "judged as of the last list"
    await view.refresh()
    assert "old" not in view.live()


async def test_a_replica_that_cannot_list_judges_no_one_gone() -> None:
    leases, clock = FakeLeases(), Clock()
    other = MemberLease(leases, leases.namespace, "other", "other/1", TIMING, clock=clock)
    await other.join()
    view = Members(leases, leases.namespace, "me", "me/1", TIMING, clock=clock)
    await view.refresh()
    leases.failing = 1000  # the apiserver stops answering this replica's lists
    for _ in range(30):
        await clock.sleep(2)
        assert not await view.refresh()
    assert view.live() == {"me": "me/1", "other": "other/1"}


async def test_leases_of_long_gone_members_are_deleted() -> None:
    leases, clock = FakeLeases(), Clock()
    gone = MemberLease(leases, leases.namespace, "gone", "gone/1", TIMING, clock=clock)
    await gone.join()
    view = Members(leases, leases.namespace, "me", "me/1", TIMING, clock=clock)
    await view.refresh()
    await clock.sleep(59)
    await view.refresh()
    await view._delete_stale()
    assert "gone" in leases.objects
    await clock.sleep(1)
    await view.refresh()
    await view._delete_stale()
    assert "gone" not in leases.objects


async def test_members_wait_for_a_single_leader_of_an_earlier_release_to_stop() -> None:
    fast = Timing(lease_duration=0.3, renew_deadline=0.2, retry_period=0.05)
    leases = FakeLeases()
    await wait_for_single_leader(leases, leases.namespace, "lease", fast)  # none: no wait
    old = {"metadata": {"name": "lease"}, "spec": {"holderIdentity": "old-pod"}}
    leases._store("lease", {**old, "spec": {**old["spec"], "leaseDurationSeconds": 1}})
    started = time.monotonic()
    await asyncio.wait_for(wait_for_single_leader(leases, leases.namespace, "lease", fast), 5)
    assert 1.0 <= time.monotonic() - started < 2.0, "until its lease ran out"
    leases._store("lease", old)  # released (no holder) as it stopped: no wait
    started = time.monotonic()
    leases._store("lease", {**old, "spec": {"leaseDurationSeconds": 1}})
    await wait_for_single_leader(leases, leases.namespace, "lease", fast)
    assert time.monotonic() - started < 0.1


async def test_the_members_gauge_reads_zero_until_this_process_holds_its_lease() -> None:
    leases, clock = FakeLeases(), Clock()
    lease = MemberLease(leases, leases.namespace, "me", "me/1", TIMING, clock=clock)
    view = Members(leases, leases.namespace, "me", "me/1", TIMING, clock=clock)
    registry = CollectorRegistry()
    supervisor = SimpleNamespace(ownership=Ownership.alone(), tasks={}, terminal=set())
    register_member_metrics(registry, lease, view, supervisor)  # type: ignore[arg-type]
    assert registry.get_sample_value("asyncjobs_operator_members") == 0
    await lease.join()
    assert registry.get_sample_value("asyncjobs_operator_members") == 1
    assert registry.get_sample_value("asyncjobs_operator_shards_owned") == shards.SHARDS


@pytest.mark.parametrize(
    ("previous_sent", "answered_at", "expected"),
    [
        pytest.param(100.0, 102.0, 100.0, id="a-prompt-answer-dates-the-change-by-the-last-list"),
        pytest.param(100.0, 110.0, 106.0, id="a-slow-answer-keeps-a-second-to-spare"),
        pytest.param(100.0, 100.5, 100.0, id="lists-close-together"),
    ],
)
def test_a_change_counts_from_the_previous_list_within_the_renew_gap(
    previous_sent: float, answered_at: float, expected: float
) -> None:
    since = changed_no_earlier_than(previous_sent, answered_at, TIMING)
    assert since == expected
    # Whatever the timing, the holder (which gives up at most renew_deadline after a
    # write sent before answered_at) has stopped a second before its lease runs out.
    assert answered_at + TIMING.renew_deadline + 1 <= since + TIMING.lease_duration


def test_the_next_expiry_is_that_of_the_first_live_holder() -> None:
    sightings = {
        "a": seen("a/1", 100.0),
        "b": seen("b/1", 95.0),
        "gone": seen("g/1", 50.0),
        "left": seen("", 99.0),
    }
    assert seconds_to_next_expiry(sightings, 104.0, 15) == pytest.approx(6.0)
    assert seconds_to_next_expiry({"gone": seen("g/1", 50.0)}, 104.0, 15) is None


async def test_a_killed_member_is_judged_gone_a_lease_after_the_list_before_its_last_renewal() -> (
    None
):
    leases, clock = FakeLeases(), Clock()
    b = MemberLease(leases, leases.namespace, "b", "b/1", TIMING, clock=clock, wall=lambda: T0)
    view = Members(leases, leases.namespace, "a", "a/1", TIMING, clock=clock)
    await view.refresh()
    await b.join()
    await clock.sleep(TIMING.retry_period)
    await view.refresh()  # first sighting: live for a whole duration from this list
    listed_before_renewal = clock.now
    await clock.sleep(0.5)
    await b.step()  # its last renewal; then it is killed
    await clock.sleep(TIMING.retry_period - 0.5)
    await view.refresh()
    assert "b" in view.live()
    # Judged at the list sent a lease duration after the list that did not show the
    # renewal, and the pause before the next list ends exactly there.
    expiry = listed_before_renewal + TIMING.lease_duration
    while clock.now + TIMING.retry_period < expiry:
        await clock.sleep(view._pause())
        await view.refresh()
        assert "b" in view.live()
    pause = view._pause()
    assert clock.now + pause == pytest.approx(expiry, abs=0.02)
    await clock.sleep(pause)
    await view.refresh()
    assert "b" not in view.live()
