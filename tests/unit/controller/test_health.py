"""Liveness: a write the watch never echoes marks the operator unhealthy."""

from __future__ import annotations

from asyncjobs.controller.health import WatchHealth


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_quiet_operator_is_healthy() -> None:
    clock = Clock()
    health = WatchHealth(clock, stall_seconds=60)
    clock.now += 3600
    assert health.healthy()


def test_echoed_write_keeps_it_healthy() -> None:
    clock = Clock()
    health = WatchHealth(clock, stall_seconds=60)
    health.wrote("j1", "41")
    health.observed("j1", "40")  # an older event is not the echo
    clock.now += 30
    assert health.stalled_for() == 30
    health.observed("j1", "41")
    clock.now += 300
    assert health.healthy()


def test_unechoed_write_fails_liveness_after_the_stall_time() -> None:
    clock = Clock()
    health = WatchHealth(clock, stall_seconds=60)
    health.wrote("j1", "41")
    clock.now += 59
    assert health.healthy()
    clock.now += 1
    assert not health.healthy()


def test_a_later_event_or_deletion_counts_as_the_echo() -> None:
    clock = Clock()
    health = WatchHealth(clock, stall_seconds=60)
    health.wrote("j1", "41")
    health.wrote("j2", "42")
    health.observed("j1", "45")
    health.forget("j2")
    clock.now += 120
    assert health.healthy()


def test_write_that_changed_nothing_does_not_fail_liveness() -> None:
    # A merge patch equal to the stored status keeps the resource version: the watch
    # delivered that version before and sends no new event for it.
    clock = Clock()
    health = WatchHealth(clock, stall_seconds=60)
    health.observed("j1", "41")
    health.wrote("j1", "41")
    clock.now += 300
    assert health.healthy()


def test_write_already_passed_by_the_watch_is_not_awaited() -> None:
    clock = Clock()
    health = WatchHealth(clock, stall_seconds=60)
    health.observed("j2", "50")  # the stream is past the version written to j1
    health.wrote("j1", "45")
    clock.now += 300
    assert health.healthy()
