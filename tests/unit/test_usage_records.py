"""The per-key usage record (core/usage_records.py): a fold adds a finished job's usage
to every period it finished in, once, and drops periods long over; the API counts a
job either live or folded, never both (api/key_usage.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from asyncjobs.api.key_usage import KeyUsage
from asyncjobs.core import usage_records
from asyncjobs.core.budget_periods import Period
from asyncjobs.core.jobs import JobView
from asyncjobs.core.usage_records import JobSpend, fold, read, spend_of

NOW = datetime(2026, 2, 19, 8, 20, tzinfo=UTC)


def job(name: str, done: datetime, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {
            "requestType": "chat_completion",
            "model": "openai/gpt-4o",
            "virtualKeyId": "team-a",
            "submittedAt": "2026-02-19T08:00:00.000Z",
            "requestRef": {"secretName": "x", "chunks": 1, "size": 2, "sha256": "0" * 64},
        },
        "status": {
            "phase": "Completed",
            "completionTime": done.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "provider": "openai",
            "usage": {"promptTokens": prompt, "completionTokens": completion},
        },
    }


def test_a_fold_counts_a_job_once_in_each_of_its_periods() -> None:
    spend = spend_of(job("j1", NOW, 70, 30))
    assert spend == JobSpend("j1", "team-a", NOW, 70, 30, 100)
    data = fold(None, spend, NOW)
    assert data is not None
    record = read(data)
    assert record is not None
    for period in Period:
        assert record.tokens(period, NOW) == 100
        assert record.totals(period, NOW) == {
            "requests": 1,
            "inputTokens": 70,
            "outputTokens": 30,
            "totalTokens": 100,
        }
    # The same job again (a fold repeated after a crash before the delete): no change.
    assert fold(data, spend, NOW) is None
    second = spend_of(job("j2", NOW, 5, 5))
    assert second is not None
    again = read(fold(data, second, NOW))
    assert again is not None
    assert again.tokens(Period.DAY, NOW) == 110
    assert again.folded == ("j1", "j2")


def test_periods_before_the_previous_one_are_dropped() -> None:
    old = spend_of(job("old", NOW - timedelta(days=3), 1, 1))
    assert old is not None
    data = fold(None, old, NOW - timedelta(days=3))
    late = spend_of(job("late", NOW, 1, 1))
    assert late is not None
    record = read(fold(data, late, NOW))
    assert record is not None
    days = sorted(key for key in record.periods if key.startswith("day:"))
    assert days == ["day:2026-02-19T00:00:00Z"]
    # The month of both is kept.
    assert record.tokens(Period.MONTH, NOW) == 4


def test_a_job_without_a_key_or_not_finished_has_nothing_to_fold() -> None:
    keyless = job("k", NOW, 1, 1)
    del keyless["spec"]["virtualKeyId"]
    running = job("r", NOW, 1, 1)
    running["status"]["phase"] = "Processing"
    assert spend_of(keyless) is None
    assert spend_of(running) is None


def test_the_api_counts_a_job_live_or_folded_never_both() -> None:
    usage = KeyUsage()
    live = job("j1", NOW, 70, 30)
    usage.seen(JobView.from_object(live))
    # A terminal job's later updates (a webhook's delivery record) are seen again.
    usage.seen(JobView.from_object(live))
    assert usage.tokens_used("team-a", Period.DAY, NOW) == 100
    spend = spend_of(live)
    assert spend is not None
    record = read(fold(None, spend, NOW))
    assert record is not None
    name = usage_records.record_name("team-a")
    # Folded, not yet deleted: still 100.
    usage.put_record(name, record)
    assert usage.tokens_used("team-a", Period.DAY, NOW) == 100
    # Deleted: the record alone carries it, until the day is over.
    usage.forget(JobView.from_object(live))
    assert usage.tokens_used("team-a", Period.DAY, NOW) == 100
    assert usage.summary("team-a", Period.DAY, NOW)["total_tokens"] == 100
    assert usage.tokens_used("team-a", Period.DAY, NOW + timedelta(days=1)) == 0
    usage.put_record(name, None)
    assert usage.tokens_used("team-a", Period.DAY, NOW) == 0
