"""An endpoint's delivery log, decided without the apiserver: entries appended with their
counters, a redelivery replacing its earlier entry, entries past the retention dropped,
at most the latest 100 kept, tests not counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from asyncjobs.core import webhook_log

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = 24 * 3600.0


def delivered(delivery_id: str, ended: datetime, outcome: str = "delivered") -> dict[str, Any]:
    record = {"time": ended.strftime("%Y-%m-%dT%H:%M:%SZ"), "statusCode": 200, "latencyMs": 5}
    return webhook_log.entry(
        delivery_id, f"job-{delivery_id}", "async_job.completed", outcome, ended, 1, [record]
    )


def test_a_delivery_is_appended_and_counted() -> None:
    status = {"delivered": 4, "failures": 1, "deliveries": [delivered("a", NOW)]}
    patch = webhook_log.appended(status, delivered("b", NOW), NOW, 30 * DAY)
    assert [d["id"] for d in patch["deliveries"]] == ["a", "b"]
    assert (patch["delivered"], patch["lastStatusCode"]) == (5, 200)
    assert patch["lastDeliveryTime"] == "2026-03-01T12:00:00Z"
    assert "failures" not in patch


def test_a_failure_counts_as_one() -> None:
    patch = webhook_log.appended({}, delivered("a", NOW, "failed"), NOW, DAY)
    assert (patch["failures"], "delivered" in patch) == (1, False)


def test_a_redelivery_replaces_the_earlier_entry_of_its_delivery() -> None:
    status = {"deliveries": [delivered("a", NOW - timedelta(hours=1)), delivered("b", NOW)]}
    patch = webhook_log.appended(status, delivered("a", NOW), NOW, DAY)
    assert [d["id"] for d in patch["deliveries"]] == ["b", "a"]


def test_a_test_event_is_logged_but_not_counted() -> None:
    patch = webhook_log.appended({}, delivered("t", NOW, "test"), NOW, DAY, count=False)
    assert list(patch) == ["deliveries"]


def test_entries_past_the_retention_go_and_at_most_100_stay() -> None:
    old = delivered("old", NOW - timedelta(days=31))
    many = [delivered(str(n), NOW - timedelta(seconds=n)) for n in range(150)]
    kept = webhook_log.kept([old, *reversed(many)], NOW, 30 * DAY)
    assert len(kept) == webhook_log.MAX_ENTRIES
    assert kept[-1]["id"] == "0"  # the newest
    assert "old" not in {d["id"] for d in kept}


def test_a_sweep_patches_only_when_something_expired() -> None:
    fresh = {"deliveries": [delivered("a", NOW - timedelta(seconds=10))]}
    assert webhook_log.swept(fresh, NOW, 60) is None
    assert webhook_log.swept(fresh, NOW, 5) == {"deliveries": []}
