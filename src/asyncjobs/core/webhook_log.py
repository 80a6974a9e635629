"""An endpoint's delivery log: the deliveries that ended, kept on its AsyncJobWebhook.

A job keeps its own latest attempts only while it exists (its result's TTL, an hour by
default); the contract keeps attempt records for 30 days. So when a delivery ends the
operator appends it, with its attempt records (never the payload), to the endpoint's
`status.deliveries`, which `kubectl get ajwh -o yaml` and `GET /api/webhooks/{id}/
deliveries` show and from which a redelivery is asked for. Entries older than the
retention go whenever the log is written or swept; at most MAX_ENTRIES are kept (the
newest), so the object stays small whatever the traffic.

Pure functions over the status; controller/endpoint_status.py writes what they decide.
Also the redelivery and test requests: annotations the API sets (it never signs or
sends) and the operator answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from asyncjobs.core.jobs import parse_time

MAX_ENTRIES = 100
DEFAULT_RETENTION_SECONDS = 30 * 24 * 3600
OUTCOME_TEST = "test"

# On a job: redeliver its notification (the value: a token naming the request).
REDELIVER_ANNOTATION = "asyncjobs.dev/redeliver-requested"
# On an endpoint: send it a test event (the value: the test's id).
TEST_ANNOTATION = "asyncjobs.dev/test-requested"


def entry(
    delivery_id: str,
    job_id: str,
    event: str,
    outcome: str,
    ended: datetime,
    attempts: int,
    records: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    return {
        "id": delivery_id,
        "jobId": job_id,
        "event": event,
        "outcome": outcome,
        "time": ended.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "attempts": attempts,
        "records": [dict(record) for record in records],
    }


def kept(
    deliveries: Sequence[Mapping[str, Any]], now: datetime, retention_seconds: float
) -> list[dict[str, Any]]:
    """The entries still within the retention, the newest MAX_ENTRIES of them."""
    oldest = now - timedelta(seconds=retention_seconds)
    fresh = []
    for delivery in deliveries:
        ended = _ended(delivery)
        if ended is not None and ended >= oldest:
            fresh.append(dict(delivery))
    return fresh[-MAX_ENTRIES:]


def _ended(delivery: Mapping[str, Any]) -> datetime | None:
    try:
        return parse_time(str(delivery["time"]))
    except (KeyError, ValueError):
        return None


def appended(
    status: Mapping[str, Any],
    new: Mapping[str, Any],
    now: datetime,
    retention_seconds: float,
    *,
    count: bool = True,
) -> dict[str, Any]:
    """The endpoint status patch for a delivery that ended: the log with it (a later entry
    of the same delivery, a redelivery, replaces the earlier) and, unless a test, its
    counters."""
    others = [d for d in status.get("deliveries", []) if d.get("id") != new["id"]]
    patch: dict[str, Any] = {
        "deliveries": kept([*others, new], now, retention_seconds),
    }
    if not count:
        return patch
    patch["lastDeliveryTime"] = new["time"]
    records = new.get("records") or []
    if records and "statusCode" in records[-1]:
        patch["lastStatusCode"] = records[-1]["statusCode"]
    if new["outcome"] == "delivered":
        patch["delivered"] = int(status.get("delivered", 0)) + 1
    else:
        patch["failures"] = int(status.get("failures", 0)) + 1
    return patch


def swept(
    status: Mapping[str, Any], now: datetime, retention_seconds: float
) -> dict[str, Any] | None:
    """The patch that drops entries past the retention, or None when none are."""
    deliveries = status.get("deliveries", [])
    remaining = kept(deliveries, now, retention_seconds)
    if len(remaining) == len(deliveries):
        return None
    return {"deliveries": remaining}


def find(status: Mapping[str, Any], delivery_id: str) -> Mapping[str, Any] | None:
    for delivery in status.get("deliveries", []):
        if delivery.get("id") == delivery_id:
            found: Mapping[str, Any] = delivery
            return found
    return None


def delivery_document(delivery: Mapping[str, Any]) -> dict[str, Any]:
    """A log entry as `/api/webhooks/{id}/deliveries` answers it."""
    return {
        "id": delivery.get("id", ""),
        "job_id": delivery.get("jobId", ""),
        "event": delivery.get("event", ""),
        "status": delivery.get("outcome", ""),
        "completed_at": delivery.get("time", ""),
        "attempt_count": int(delivery.get("attempts", 0)),
        "attempts": [
            {
                "attempted_at": record.get("time", ""),
                "status_code": record.get("statusCode"),
                "latency_ms": int(record.get("latencyMs", 0)),
                "error": record.get("error"),
            }
            for record in delivery.get("records", [])
        ],
    }
